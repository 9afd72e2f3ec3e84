from __future__ import annotations

import math
import time

import pytest
import torch

from gazerm.train.batch import UnitLabels
from gazerm.train.metrics import EvalTotals, StartupClock
from tests.train.helpers import loss_spec


def bt_loss(difference: float) -> float:
    return math.log1p(math.exp(-difference))  # -log σ(d)


def pairwise_totals(use_margin: bool) -> EvalTotals:
    """Two micro-batches over sources a and b; reward differences (chosen - rejected) 1, -2, 0.5 | 3."""
    totals = EvalTotals(loss_spec("pairwise"))
    first = UnitLabels(["a", "b", "a"], margin=torch.tensor([0.5, 0.0, 1.0]))
    totals.add(torch.tensor([2.0, -1.0, 0.5, 1.0, 1.0, 0.0]), first, use_margin)
    totals.add(torch.tensor([4.0, 1.0]), UnitLabels(["b"], margin=torch.tensor([2.0])), use_margin)
    return totals


def test_pairwise_accuracy_loss_and_margin_per_source_and_overall():
    metrics = pairwise_totals(use_margin=False).metrics()
    a = {"accuracy": 1.0, "loss": (bt_loss(1.0) + bt_loss(0.5)) / 2, "reward_margin": 0.75, "count": 2}
    b = {"accuracy": 0.5, "loss": (bt_loss(-2.0) + bt_loss(3.0)) / 2, "reward_margin": 0.5, "count": 2}
    overall = {
        "accuracy": 0.75,
        "loss": (bt_loss(1.0) + bt_loss(0.5) + bt_loss(-2.0) + bt_loss(3.0)) / 4,
        "reward_margin": 2.5 / 4,
        "count": 4,
    }
    expected = {f"val/{k}": v for k, v in overall.items()}
    expected |= {f"val/{source}/{k}": v for source, values in (("a", a), ("b", b)) for k, v in values.items()}
    assert metrics == pytest.approx(expected)


@pytest.mark.parametrize(("tie_credit", "accuracy"), [(0.5, 0.5), (1.0, 2 / 3)])
def test_a_tie_counts_as_run_accuracy_ties_says(tie_credit, accuracy):
    """Differences 0, -1, 0.5: one right, one wrong, one tie (trl's argmax picks the chosen of a tie)."""
    totals = EvalTotals(loss_spec("pairwise"), tie_credit)
    totals.add(torch.tensor([1.0, 0.0, 2.0, 1.0, 1.0, 1.5]), UnitLabels(["a"] * 3, margin=torch.zeros(3)))
    assert totals.metrics()["val/accuracy"] == pytest.approx(accuracy)


def test_margin_enters_the_loss_only():
    with_margin, without = (
        pairwise_totals(use_margin=True).metrics(),
        pairwise_totals(use_margin=False).metrics(),
    )
    assert with_margin["val/a/loss"] == pytest.approx((bt_loss(1.0 - 0.5) + bt_loss(0.5 - 1.0)) / 2)
    assert with_margin["val/b/loss"] == pytest.approx((bt_loss(-2.0) + bt_loss(3.0 - 2.0)) / 2)
    for name in ("accuracy", "reward_margin", "count"):
        assert with_margin[f"val/{name}"] == without[f"val/{name}"]


def test_all_reduce_outside_distributed_is_identity():
    totals = pairwise_totals(use_margin=False)
    before = totals.metrics()
    assert totals.all_reduce() is totals and totals.metrics() == before


def test_regression_mse_and_mae():
    scalar = EvalTotals(loss_spec("regression"))
    scalar.add(
        torch.tensor([1.0, 2.0, 0.0]),
        UnitLabels(["a", "a", "b"], targets=torch.tensor([[2.0], [2.0], [3.0]])),
    )
    assert scalar.metrics() == pytest.approx(
        {"val/mse": 10 / 3, "val/mae": 4 / 3, "val/count": 3}
        | {
            "val/a/mse": 0.5,
            "val/a/mae": 0.5,
            "val/a/count": 2,
            "val/b/mse": 9.0,
            "val/b/mae": 3.0,
            "val/b/count": 1,
        }
    )
    attributes = EvalTotals(loss_spec("regression"))  # per row: mean over the attributes, then mean over rows
    attributes.add(
        torch.tensor([[1.0, 3.0], [0.0, 0.0]]),
        UnitLabels(["a", "a"], targets=torch.tensor([[0.0, 1.0], [2.0, 0.0]])),
    )
    metrics = attributes.metrics()
    assert (metrics["val/mse"], metrics["val/mae"]) == pytest.approx(((2.5 + 2.0) / 2, (1.5 + 1.0) / 2))


def test_no_rows_no_metrics():
    assert EvalTotals(loss_spec("pairwise")).metrics() == {}


def test_listwise_accuracy_over_ordered_pairs_and_loss():
    """A 3-list with tiers 0,1,2 and rewards 3,1,2 gets 2 of 3 pairs right; a 2-list with a tie (tiers 0,0)
    has no ordered pair; a 2-list 0,1 with rewards 0,1 gets its pair wrong."""
    from gazerm.model.losses import listwise_loss

    totals = EvalTotals(loss_spec("listwise"))
    micro = UnitLabels(
        ["a", "a", "b"],
        list_index=torch.tensor([[0, 1, 2], [3, 4, -1], [5, 6, -1]]),
        tiers=torch.tensor([[0, 1, 2], [0, 0, 0], [0, 1, 0]]),
    )
    rewards = torch.tensor([3.0, 1.0, 2.0, 5.0, 5.0, 0.0, 1.0])
    totals.add(rewards, micro)
    metrics = totals.metrics()
    assert metrics["val/accuracy"] == pytest.approx(2 / 4)
    assert metrics["val/a/accuracy"] == pytest.approx(2 / 3) and metrics["val/b/accuracy"] == 0.0
    assert metrics["val/count"] == 3
    per_list = [
        listwise_loss(torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([[0, 1, 2]]), torch.ones(1, 3)),
        listwise_loss(torch.tensor([[5.0, 5.0]]), torch.tensor([[0, 0]]), torch.ones(1, 2)),
        listwise_loss(torch.tensor([[0.0, 1.0]]), torch.tensor([[0, 1]]), torch.ones(1, 2)),
    ]
    assert metrics["val/loss"] == pytest.approx(float(sum(per_list)) / 3)


def test_step_average_is_the_mean_over_the_accumulated_micro_batches():
    from gazerm.train.metrics import StepAverage

    window = StepAverage()
    window.add({"train/loss": 0.9, "train/accuracy": 0.5})
    window.add({"train/loss": 0.5, "train/accuracy": 1.0})
    assert window.pop() == pytest.approx({"train/loss": 0.7, "train/accuracy": 0.75})
    window.add({"train/loss": 0.2})
    assert window.pop() == {"train/loss": 0.2}  # popping started a new step


def test_startup_clock_marks_seconds_since_the_start_and_sums_up_each_phase():
    clock = StartupClock(started_at=100.0, marks={"ray": 9.0, "data": 10.5})
    clock.marks["first_step"] = 40.0
    assert clock.metrics() == {"startup/ray_s": 9.0, "startup/data_s": 10.5, "startup/first_step_s": 40.0}
    assert clock.summary() == "first step after 40 s: ray 9.0 s, data 1.5 s, first_step 29.5 s"
    now = StartupClock(started_at=time.time() - 5)
    now.mark("workers")
    assert 5 <= now.marks["workers"] < 10
