"""A checkpoint torn by a kill while it was written (a rank's files missing or cut short) is never what
a resubmitted job resumes from: the driver takes the newest *complete* one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gazerm.storage import Storage
from gazerm.train.checkpoints import (
    DEEPSPEED_DIR,
    FILE_LIST,
    LISTED,
    RAY_RUN_NAME,
    STATE_FILE,
    completed_step,
    latest_checkpoint,
    write_file_list,
)

WORLD_SIZE = 2


def save_checkpoint(output: Path, name: str, step: int) -> Path:
    """A checkpoint as two ranks leave it: each rank's DeepSpeed files and file list, rank 0's state."""
    directory = output / RAY_RUN_NAME / name
    for rank in range(WORLD_SIZE):
        rank_dir = output / f"rank{rank}-{name}"  # each rank writes its own directory; Ray merges them
        (rank_dir / DEEPSPEED_DIR / "state").mkdir(parents=True)
        (rank_dir / DEEPSPEED_DIR / "state" / f"optim_rank{rank}.pt").write_bytes(os.urandom(4096))
        if rank == 0:
            layout = {"world_size": WORLD_SIZE}
            state = {"step": step, "layout": layout, LISTED: True}
            (rank_dir / STATE_FILE).write_text(json.dumps(state))
        write_file_list(rank_dir, rank)
        for path in rank_dir.rglob("*"):
            if path.is_file():
                target = directory / path.relative_to(rank_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(path.read_bytes())
    return directory


def test_each_rank_lists_what_it_wrote(tmp_path):
    checkpoint = save_checkpoint(tmp_path, "checkpoint_a", step=10)
    assert json.loads((checkpoint / FILE_LIST.format(rank=1)).read_text()) == {
        f"{DEEPSPEED_DIR}/state/optim_rank1.pt": 4096
    }
    assert set(json.loads((checkpoint / FILE_LIST.format(rank=0)).read_text())) == {
        STATE_FILE,
        f"{DEEPSPEED_DIR}/state/optim_rank0.pt",
    }
    assert completed_step(Storage.of(checkpoint)) == 10


@pytest.mark.parametrize(
    "tear",
    [
        lambda c: (c / DEEPSPEED_DIR / "state" / "optim_rank1.pt").unlink(),  # a file not uploaded yet
        lambda c: (c / DEEPSPEED_DIR / "state" / "optim_rank0.pt").write_bytes(b"cut"),  # cut short
        lambda c: (c / FILE_LIST.format(rank=1)).unlink(),  # rank 1's upload never started
        lambda c: (c / STATE_FILE).unlink(),
        lambda c: (c / FILE_LIST.format(rank=0)).write_text('{"trainer_st'),  # the list itself cut short
    ],
    ids=["file-missing", "file-short", "rank-missing", "no-state", "list-short"],
)
def test_a_torn_checkpoint_is_passed_over_for_the_last_complete_one(tmp_path, tear):
    older = save_checkpoint(tmp_path, "checkpoint_a", step=10)
    newer = save_checkpoint(tmp_path, "checkpoint_b", step=20)
    assert latest_checkpoint(Storage.of(tmp_path)) == str(newer)
    tear(newer)
    assert completed_step(Storage.of(newer)) is None
    assert latest_checkpoint(Storage.of(tmp_path)) == str(older)


def test_a_checkpoint_from_before_file_lists_is_resumed_from_on_trust(tmp_path):
    older = save_checkpoint(tmp_path, "checkpoint_a", step=10)
    state = json.loads((older / STATE_FILE).read_text())
    (older / STATE_FILE).write_text(json.dumps({k: v for k, v in state.items() if k != LISTED}))
    for rank in range(WORLD_SIZE):
        (older / FILE_LIST.format(rank=rank)).unlink()
    assert latest_checkpoint(Storage.of(tmp_path)) == str(older)
