"""What the driver hands Ray Train: the settings it works out for the workers, and their entry point.

Apart from ``train.loop`` so that the processes that only hand a run over (the ``gazerm train`` driver, each
of a search's trial processes) pickle the entry point by reference without importing what the workers
train with (transformers, peft, DeepSpeed): seconds of every trial's start-up on a small machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gazerm.model.inputs import InputSpec
from gazerm.train.kinds import LossSpec

# The reported metric Ray ranks checkpoints by under run.select: best (Trainer._track_best).
SELECT_RANK = "select_rank"


def checkpoint_score(select: str) -> str | None:
    """The reported metric checkpoints are kept by (Ray Train's, or the local launcher's keeping):
    ``SELECT_RANK`` under ``run.select: best``; None keeps the newest."""
    return SELECT_RANK if select == "best" else None


@dataclass(frozen=True)
class LoopSettings:
    """What the driver works out for the workers: schedule length, where to track, the train blocks, how
    the model reads its inputs and what it learns from."""

    total_steps: int
    tracking_uri: str
    run_id: str
    plan: dict[str, Any]  # train.order.EpochPlan.to_dict(): the seeded data order every rank derives
    inputs: InputSpec  # derived once from the data: what batches are encoded with, saved with the model
    loss: LossSpec  # the job's loss kind, resolved once
    resume_from: str | None = None
    startup: dict[str, Any] = field(default_factory=dict)  # train.metrics.StartupClock as the driver left it


def train_loop_per_worker(loop_config: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train's entry point on every rank (``train.loop.run_rank``)."""
    from gazerm.train.loop import run_rank

    return run_rank(loop_config)
