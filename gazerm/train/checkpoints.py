"""What a training checkpoint holds and how the driver and workers find one.

A checkpoint (``output_dir/ray/checkpoint_*``, written by Ray Train) holds the DeepSpeed state (all ranks'
ZeRO partitions), a ``trainer_state.json`` and one file list per rank; the final one also holds the
exported reward model under ``model/``. The file lists let a copy torn by a kill during its upload be
recognised and never resumed from or selected.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from gazerm.storage import Storage

log = logging.getLogger(__name__)

RAY_RUN_NAME = "ray"
STATE_FILE = "trainer_state.json"
DEEPSPEED_DIR = "deepspeed"
MODEL_DIR = "model"
FILE_LIST = "files.rank{rank}.json"  # what each rank wrote into a checkpoint: relative path → bytes
LISTED = "files_listed"  # in STATE_FILE: the checkpoint's ranks wrote file lists (older ones did not)


def write_file_list(directory: Path, rank: int) -> None:
    """Record the files this rank put in a checkpoint (see the module doc)."""
    files = {
        str(path.relative_to(directory)): path.stat().st_size
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }
    (directory / FILE_LIST.format(rank=rank)).write_text(json.dumps(files))


def completed_step(checkpoint: Storage) -> int | None:
    """The checkpoint's step if it is complete: its state and every rank's file list readable, every
    listed file there at its listed size. (A checkpoint from before file lists is taken on trust.)"""
    try:
        state = json.loads(checkpoint.child(STATE_FILE).read_text())
        if not state.get(LISTED):
            log.warning(
                "%s predates checkpoint file lists: resuming without a completeness check", checkpoint.uri
            )
            return state["step"]
        for rank in range(state["layout"]["world_size"]):
            files = json.loads(checkpoint.child(FILE_LIST.format(rank=rank)).read_text())
            if any(checkpoint.child(name).size() != size for name, size in files.items()):
                return None
        return state["step"]
    except (OSError, ValueError, KeyError, TypeError):  # a file missing, cut short or not JSON yet
        return None


def complete_checkpoints(output: Storage) -> dict[int, str]:
    """Step → URI/path of every complete checkpoint a run under ``output`` left; torn ones are passed
    over with a warning."""
    found = {}
    for checkpoint in output.child(RAY_RUN_NAME).subdirectories("checkpoint_"):
        step = completed_step(checkpoint)
        if step is None:
            log.warning("skipping %s: incomplete (torn while it was written)", checkpoint.uri)
        else:
            found[step] = checkpoint.uri
    return found


def latest_checkpoint(output: Storage) -> str | None:
    """The newest complete checkpoint a previous attempt of this job left (highest trained step)."""
    found = complete_checkpoints(output)
    return found[max(found)] if found else None
