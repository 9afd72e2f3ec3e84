"""A resume is exact only under the data layout its checkpoint was trained with; the driver checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gazerm.errors import ConfigError
from gazerm.train.checkpoints import STATE_FILE
from gazerm.train.collate import Windows
from gazerm.train.config import DataConfig, RunConfig, TrainJobConfig
from gazerm.train.job import check_same_layout
from gazerm.train.order import Block, EpochPlan

BLOCKS = [Block("a.parquet", 0, 40), Block("b.parquet", 0, 24)]


def checkpoint(tmp_path: Path, layout: dict | None) -> str:
    state = {"step": 4, "epoch": 0, "micro_in_epoch": 4, **({"layout": layout} if layout is not None else {})}
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    return str(tmp_path)


def layout(config: TrainJobConfig, blocks: list[Block] = BLOCKS) -> dict[str, int]:
    return EpochPlan.of(blocks, config).layout(Windows.of(config))


def test_the_plan_round_trips_through_the_worker_settings():
    plan = EpochPlan.of(BLOCKS, TrainJobConfig())
    assert EpochPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    assert layout(TrainJobConfig()) == {
        "seed": 0,
        "world_size": 2,
        "micro_batch_size": 16,
        "bucket_window": 8,
        "shuffle_buffer": 10_000,
        "balance": False,
        "dealing": "none",
        "blocks": 2,
        "units": 64,
    }


def test_a_resume_under_the_same_layout_goes_ahead(tmp_path):
    now = layout(TrainJobConfig())
    check_same_layout(checkpoint(tmp_path, now), now)
    check_same_layout(checkpoint(tmp_path, None), now)  # a checkpoint from before layouts were saved


def test_a_resume_under_another_layout_is_refused_naming_what_changed(tmp_path):
    saved = layout(TrainJobConfig())
    now = layout(TrainJobConfig(run=RunConfig(num_workers=4)), [*BLOCKS, Block("c.parquet", 0, 8)])
    with pytest.raises(ConfigError, match=r"world_size: 2 then, 4 now; blocks: 2 then, 3 now; units: 64"):
        check_same_layout(checkpoint(tmp_path, saved), now)


def test_a_resume_with_other_windows_is_refused(tmp_path):
    """The collator's windows decide which units share a micro-batch, as the order does."""
    saved = layout(TrainJobConfig())
    now = layout(TrainJobConfig(run=RunConfig(micro_batch_size=8)))
    with pytest.raises(ConfigError, match=r"micro_batch_size: 16 then, 8 now"):
        check_same_layout(checkpoint(tmp_path, saved), now)


def test_a_resume_with_the_ranks_dealt_otherwise_is_refused(tmp_path):
    """Dealt ranks train on other units than ranks reading their own shares."""
    saved = layout(TrainJobConfig())
    now = layout(TrainJobConfig(data=DataConfig(balance_ranks=True)))
    with pytest.raises(ConfigError, match=r"balance: False then, True now"):
        check_same_layout(checkpoint(tmp_path, saved), now)
    one_rank = TrainJobConfig(data=DataConfig(balance_ranks=True), run=RunConfig(num_workers=1))
    assert layout(one_rank)["balance"] is False  # one rank has nobody to deal with


def test_a_checkpoint_from_before_a_layout_key_counts_as_what_runs_had_then(tmp_path):
    """``balance`` came later: a checkpoint without it was trained with the ranks reading their own shares,
    so resuming it dealt is refused, and undealt goes ahead."""
    saved = layout(TrainJobConfig())
    del saved["balance"]
    check_same_layout(checkpoint(tmp_path, saved), layout(TrainJobConfig()))
    dealt = layout(TrainJobConfig(data=DataConfig(balance_ranks=True)))
    with pytest.raises(ConfigError, match=r"balance: False then, True now"):
        check_same_layout(checkpoint(tmp_path, saved), dealt)


def test_a_checkpoint_dealt_before_dealing_went_by_rounds_is_refused(tmp_path):
    """Ranks dealt longest first by all tokens (before ``dealing`` was recorded) trained on other hands
    than the rounds deal now; undealt checkpoints without the key go ahead."""
    saved = layout(TrainJobConfig(data=DataConfig(balance_ranks=True)))
    del saved["dealing"]
    now = layout(TrainJobConfig(data=DataConfig(balance_ranks=True)))
    assert now["dealing"] == "rounds by computed tokens"
    with pytest.raises(ConfigError, match=r"dealing: snake by tokens then, rounds by computed tokens now"):
        check_same_layout(checkpoint(tmp_path, saved), now)
    undealt = layout(TrainJobConfig())
    check_same_layout(checkpoint(tmp_path, {k: v for k, v in undealt.items() if k != "dealing"}), undealt)


def test_a_layout_key_the_checkpoint_never_recorded_is_refused(tmp_path):
    """A key with no known earlier value cannot be checked, so the resume is not taken on trust."""
    saved = layout(TrainJobConfig())
    del saved["shuffle_buffer"]
    with pytest.raises(ConfigError, match=r"shuffle_buffer: \(not recorded\) then, 10000 now"):
        check_same_layout(checkpoint(tmp_path, saved), layout(TrainJobConfig()))
