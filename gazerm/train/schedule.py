"""The learning-rate schedule a job's ``optim`` section names, for the worker loop and the frozen trainer."""

from __future__ import annotations

import torch
from transformers.optimization import (
    get_constant_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

from gazerm.train.config import TrainJobConfig


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainJobConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """``optim.scheduler`` over ``total_steps`` optimizer steps, after ``optim.warmup_ratio`` of them warming
    up (the cosine one decays to ``optim.min_lr_ratio`` of the rate)."""
    optim = config.optim
    warmup = int(optim.warmup_ratio * total_steps)
    if optim.scheduler == "cosine":
        return get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, warmup, total_steps, min_lr_rate=optim.min_lr_ratio
        )
    if optim.scheduler == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    return get_constant_schedule_with_warmup(optimizer, warmup)


def schedule_steps(config: TrainJobConfig, trained: int, units_per_rank: int) -> int:
    """The steps the schedule spans (``optim.schedule_horizon``): the ``trained`` ones, or under
    ``full_batches`` the full micro-batches of a rank's ``units_per_rank`` units times the epochs, as the
    reference's n // batch_size x epochs on one GPU: like it, blind to ``run.grad_accum`` (its scheduler
    steps once per optimizer step, so with accumulation it spans that many times the steps trained);
    ``run.max_steps`` sets it too."""
    run = config.run
    if config.optim.schedule_horizon == "trained" or run.max_steps is not None:
        return trained
    return units_per_rank // run.micro_batch_size * run.epochs
