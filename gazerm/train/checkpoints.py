"""What a training checkpoint holds and how the driver and workers find one.

A checkpoint (``output_dir/ray/checkpoint_*``, written by Ray Train, or by :class:`LocalCheckpoints` under
the local launcher) holds the DeepSpeed state (all ranks' ZeRO partitions), a ``trainer_state.json`` and
one file list per rank; the final one also holds the exported reward model under ``model/``. The file
lists let a copy torn by a kill during its upload be recognised and never resumed from or selected.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from gazerm.storage import Storage

log = logging.getLogger(__name__)

RAY_RUN_NAME = "ray"
STATE_FILE = "trainer_state.json"
DEEPSPEED_DIR = "deepspeed"
MODEL_DIR = "model"
FILE_LIST = "files.rank{rank}.json"  # what each rank wrote into a checkpoint: relative path → bytes
LISTED = "files_listed"  # in STATE_FILE: the checkpoint's ranks wrote file lists (older ones did not)
REPORT_FILE = "report.json"  # LocalCheckpoints' record of a whole checkpoint and what it is kept by


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


class CheckpointSink(Protocol):
    final: dict[str, Any] | None  # the last report's metrics and checkpoint, where the driver needs them

    def report(self, directory: Path, metrics: dict[str, Any]) -> None:
        """Keep the checkpoint every rank wrote its part of in its own ``directory`` (called on all ranks
        together), reported with ``metrics``; ``directory`` is deleted afterwards."""


class RayTrainCheckpoints:
    """Ray Train uploads each rank's part and keeps what the job's ``CheckpointConfig`` says; the driver
    reads the final checkpoint off ``fit()``'s result."""

    final = None

    def report(self, directory: Path, metrics: dict[str, Any]) -> None:
        import ray.train

        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


class LocalCheckpoints:
    """What Ray Train's checkpoint manager does, for the local launcher, which has none: each report's
    parts land in one ``output_dir/ray/checkpoint_<time>`` (the layout Ray Train writes, so resuming,
    selecting and publishing are the same), and rank 0 then deletes what Ray would (:func:`to_delete`).
    ``score``: the reported metric checkpoints are kept by (``run.select: best``), None to keep the newest.
    ``final`` is the last report's metrics and checkpoint."""

    def __init__(self, output: Storage, keep: int, score: str | None, rank: int) -> None:
        self.runs = output.child(RAY_RUN_NAME)
        self.keep = keep
        self.score = score
        self.rank = rank
        self.final: dict[str, Any] | None = None

    def report(self, directory: Path, metrics: dict[str, Any]) -> None:
        import torch.distributed as dist

        name = [
            datetime.now(timezone.utc).strftime("checkpoint_%Y-%m-%d_%H-%M-%S.%f") if self.rank == 0 else None
        ]
        dist.broadcast_object_list(name, src=0)  # one directory for every rank's part
        checkpoint = self.runs.child(name[0])
        checkpoint.add_files(directory)
        dist.barrier()  # every rank's part is there
        if self.rank == 0:  # registered only now: one torn by a kill is never kept in a whole one's place
            score = metrics.get(self.score) if self.score else None
            checkpoint.child(REPORT_FILE).write_text(json.dumps({"score": score}))
            kept = [c for c in self.runs.subdirectories("checkpoint_") if c.child(REPORT_FILE).exists()]
            scores = [json.loads(c.child(REPORT_FILE).read_text())["score"] for c in kept]
            for index in to_delete(scores, self.keep):
                kept[index].delete()
        self.final = {"metrics": metrics, "checkpoint": checkpoint.uri}


def to_delete(scores: list[float | None], keep: int) -> list[int]:
    """Ray Train's rule (``CheckpointConfig(num_to_keep=keep)``, scored with ``max``): of checkpoints oldest
    first, by their scores (None: unscored, kept by age), the indices of all but the ``keep`` best (of equal
    scores, the later counts as better), never the newest (the one to resume from)."""
    ranked = sorted(range(len(scores)), key=lambda i: (scores[i] if scores[i] is not None else 0, i))
    newest = len(scores) - 1
    return sorted(i for i in ranked[: max(len(scores) - keep, 0)] if i != newest)
