"""``model.fidelity: reference`` in the run's own sections: the reference's selection and schedule."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch
from pydantic import ValidationError

from gazerm.config import load_config, with_overrides
from gazerm.model.config import ModelConfig
from gazerm.train.config import REFERENCE_RUN_DEFAULTS, RunConfig, TrainJobConfig
from gazerm.train.kinds import KINDS
from gazerm.train.metric_names import KIND_METRICS
from gazerm.train.schedule import build_scheduler, schedule_steps


def test_the_switch_sets_the_reference_selection_and_a_set_field_wins():
    config = TrainJobConfig.model_validate({"model": {"fidelity": "reference"}, "run": {"eval_every": 8}})
    assert config.run.eval_every == 8
    for section, defaults in REFERENCE_RUN_DEFAULTS.items():
        for name, value in defaults.items():
            if name != "eval_every":
                assert getattr(getattr(config, section), name) == value, name
    plain = TrainJobConfig()
    assert (plain.run.eval_every, plain.run.final_eval, plain.run.select, plain.run.select_ties) == (
        20,
        True,
        "last",
        "later",
    )
    assert (plain.run.accuracy_ties, plain.optim.schedule_horizon) == ("half", "trained")


def test_a_set_override_of_the_switch_moves_the_run_fields_left_to_it():
    config = load_config(TrainJobConfig, {"run": {"keep_checkpoints": 3}}, {"model.fidelity": "reference"})
    assert (config.run.select, config.run.final_eval, config.run.keep_checkpoints) == ("best", False, 3)
    assert config.optim.schedule_horizon == "full_batches"
    assert TrainJobConfig.model_validate(config.model_dump(mode="json")) == config
    back = with_overrides(config, {"model.fidelity": "gazerm"})
    assert (back.run.select, back.run.eval_every, back.optim.schedule_horizon) == ("last", 20, "trained")


def test_a_run_section_given_as_a_config_object_takes_the_switch_too():
    config = TrainJobConfig(model=ModelConfig(fidelity="reference"), run=RunConfig(select_ties="later"))
    assert (config.run.select_ties, config.run.final_eval, config.run.eval_every) == ("later", False, 64)


def test_a_selection_metric_the_loss_kind_does_not_report_is_refused_before_the_run():
    regression = {"model": {"fidelity": "reference"}, "loss": {"kind": "regression"}}
    with pytest.raises(ValidationError, match=r"select_metric='val/accuracy'.*val/mse, val/mae"):
        TrainJobConfig.model_validate(regression)
    chosen = TrainJobConfig.model_validate(
        {**regression, "run": {"select_metric": "val/mse", "select_mode": "min"}}
    )
    assert chosen.run.select_metric == "val/mse"
    assert (
        TrainJobConfig.model_validate({"loss": {"kind": "regression"}}).run.select == "last"
    )  # ranks nothing


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_metrics_a_config_checks_are_those_each_loss_kind_reports(kind):
    totals = defaultdict(float, count=1.0)
    assert {name.split("/")[1] for name in KINDS[kind].ratios(totals, "val")} == set(KIND_METRICS[kind])


@pytest.mark.parametrize(
    ("horizon", "units", "expected"),
    [("trained", 100, 26), ("full_batches", 100, 24), ("full_batches", 96, 24)],  # 100 // 8 * 2
)
@pytest.mark.parametrize("grad_accum", [1, 2])  # the reference's horizon leaves accumulation out
def test_the_schedule_spans_the_reference_horizon(horizon, units, expected, grad_accum):
    run = {"micro_batch_size": 8, "epochs": 2, "grad_accum": grad_accum}
    config = TrainJobConfig.model_validate({"optim": {"schedule_horizon": horizon}, "run": run})
    trained = 26  # ceil(100 / 8) x 2, what a run on 100 units trains
    assert schedule_steps(config, trained, units) == expected


def test_past_the_full_batch_horizon_the_cosine_rises_again_as_the_reference():
    """The reference's cosine_scheduler_with_min_lr_ratio over T = n // 8 x 2 while 2 x ceil(n / 8) steps
    train: steps past T climb back up from the floor (0.7), as its lambda does."""
    config = TrainJobConfig.model_validate(
        {"model": {"fidelity": "reference"}, "optim": {"warmup_ratio": 0.01, "min_lr_ratio": 0.7, "lr": 1.0}}
    )
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, config, 24)
    rates = []
    for _ in range(26):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    rates.append(optimizer.param_groups[0]["lr"])
    assert rates[24] == pytest.approx(0.7) and rates[26] > rates[25] > rates[24]
