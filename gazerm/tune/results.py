"""A search's trials as MLflow recorded them, and the choices made from them: best trial, comparison.

MLflow, not Tune's result grid, is the source here so that ``gazerm tune`` and a later
``gazerm select`` (which has no Tune session) see the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gazerm.table import Table
from gazerm.train.metric_names import DEFAULT_METRIC

COMPARED_METRICS = (DEFAULT_METRIC, "val/loss")
TIE_BREAKER = "val/loss"
PER_TRIAL_PARAMS = {"output_dir", "tracking.run_name"}


@dataclass(frozen=True)
class TrialRecord:
    """One trial: its run, its config (MLflow params: strings) and its last reported metrics."""

    run_id: str
    name: str
    status: str
    params: Mapping[str, str]
    metrics: Mapping[str, float]

    @classmethod
    def from_run(cls, run: Any) -> TrialRecord:
        info = run.info
        return cls(info.run_id, info.run_name, info.status, dict(run.data.params), dict(run.data.metrics))


def rank(trial: TrialRecord, metric: str, mode: str) -> tuple[bool, float, float]:
    """Sort key, best first: by ``metric``, ties to the lower val/loss (accuracy often saturates on a
    small validation split), trials that never reported last."""
    value = trial.metrics.get(metric)
    sign = -1 if mode == "max" else 1
    return value is None, sign * (value or 0.0), trial.metrics.get(TIE_BREAKER, math.inf)


def best_trial(trials: Sequence[TrialRecord], metric: str, mode: str) -> TrialRecord | None:
    """The best trial that finished (only those exported a model), or None when none did."""
    finished = [trial for trial in trials if trial.status == "FINISHED" and metric in trial.metrics]
    return min(finished, key=lambda trial: rank(trial, metric, mode), default=None)


def varying_params(trials: Sequence[TrialRecord]) -> list[str]:
    """Config paths whose value differs between trials: the ones worth a column (not the per-trial
    output directory and run name, which differ by construction)."""
    keys = sorted({key for trial in trials for key in trial.params} - PER_TRIAL_PARAMS)
    return [key for key in keys if len({trial.params.get(key) for trial in trials}) > 1]


def comparison_table(trials: Sequence[TrialRecord], metric: str, mode: str) -> Table:
    """Trials best first: name, status, the params that vary, the search metric and val accuracy/loss."""
    params = varying_params(trials)
    metrics = list(dict.fromkeys([metric, *COMPARED_METRICS]))
    ranked = sorted(trials, key=lambda trial: rank(trial, metric, mode))
    rows = [
        [trial.name, trial.status, *(trial.params.get(key) for key in params)]
        + [trial.metrics.get(key) for key in metrics]
        for trial in ranked
    ]
    return Table(["run", "status", *params, *metrics], rows)
