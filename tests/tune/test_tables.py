"""Choosing from a search's trials: best trial, comparison and feature-ablation tables (fake results)."""

from __future__ import annotations

import json

from gazerm.tune.ablation import ablation_table
from gazerm.tune.results import TrialRecord, best_trial, comparison_table


def _trial(
    name: str, mask: list[int], accuracy: float | None, status: str = "FINISHED", **params
) -> TrialRecord:
    metrics = {} if accuracy is None else {"val/accuracy": accuracy, "val/loss": round(1 - accuracy, 2)}
    params = {"model.features_used": json.dumps(mask), "run.seed": "0", "output_dir": f"/s/{name}", **params}
    return TrialRecord(f"run-{name}", name, status, params, metrics)


TRIALS = [
    _trial("t0", [1, 1, 1, 1, 1], 0.70, **{"optim.lr": "0.001", "model.fusion": "concat"}),
    _trial("t1", [1, 1, 1, 1, 1], 0.80, **{"optim.lr": "0.003", "model.fusion": "add"}),
    _trial("t2", [0, 1, 0, 1, 0], 0.90, "KILLED", **{"optim.lr": "0.002", "model.fusion": "concat"}),
    _trial("t3", [0, 1, 0, 1, 0], 0.60, **{"optim.lr": "0.004", "model.fusion": "add"}),
    _trial("t4", [1, 0, 0, 0, 0], None, "KILLED", **{"optim.lr": "0.005", "model.fusion": "add"}),
]


def test_ablation_keeps_the_best_trial_of_each_subset():
    table = ablation_table(TRIALS, "val/accuracy", "max")

    assert table.headers == ["features", "mask", "best val/accuracy", "trials", "best run"]
    assert table.rows == [
        ["FFD+TRT", "01010", 0.90, 2, "t2"],
        ["nFix+FFD+GPT+TRT+fixProp", "11111", 0.80, 2, "t1"],
    ]  # the subset whose trial reported nothing has no row
    assert table.markdown().splitlines()[2].startswith("| FFD+TRT                  | 01010 | 0.9000 ")
    assert table.csv().splitlines() == [
        "features,mask,best val/accuracy,trials,best run",
        "FFD+TRT,01010,0.9,2,t2",
        "nFix+FFD+GPT+TRT+fixProp,11111,0.8,2,t1",
    ]


def test_ablation_for_a_metric_to_minimise():
    table = ablation_table(TRIALS, "val/loss", "min")
    assert [row[:3] for row in table.rows] == [
        ["FFD+TRT", "01010", 0.1],
        ["nFix+FFD+GPT+TRT+fixProp", "11111", 0.2],
    ]


def test_best_trial_is_the_best_that_finished():
    assert best_trial(TRIALS, "val/accuracy", "max").name == "t1"  # t2 scored higher but was stopped early
    assert best_trial(TRIALS, "val/loss", "min").name == "t1"
    assert best_trial([TRIALS[2], TRIALS[4]], "val/accuracy", "max") is None


def test_ties_go_to_the_lower_loss():
    tied = [
        TrialRecord("a", "a", "FINISHED", {}, {"val/accuracy": 1.0, "val/loss": 0.4}),
        TrialRecord("b", "b", "FINISHED", {}, {"val/accuracy": 1.0, "val/loss": 0.2}),
        TrialRecord("c", "c", "FINISHED", {}, {"val/accuracy": 0.9, "val/loss": 0.1}),
    ]
    assert best_trial(tied, "val/accuracy", "max").name == "b"
    assert [row[0] for row in comparison_table(tied, "val/accuracy", "max").rows] == ["b", "a", "c"]


def test_comparison_shows_only_the_params_that_vary_best_first():
    table = comparison_table(TRIALS, "val/accuracy", "max")

    assert table.headers == [
        "run",
        "status",
        "model.features_used",
        "model.fusion",
        "optim.lr",
        "val/accuracy",
        "val/loss",
    ]
    assert [row[0] for row in table.rows] == ["t2", "t1", "t0", "t3", "t4"]  # no metric: last
    assert table.rows[-1][-2:] == [None, None]
    assert "| t4  | KILLED   | [1, 0, 0, 0, 0]     | add          | 0.005    | -            | -        |" in (
        table.markdown()
    )
