"""The feature ablation: which gaze features help, as the best score per ``features_used`` subset.

"Best over the other params" compares each subset at its own best lr/dropout/fusion, the way the
paper reports ablations, instead of at one arbitrary setting that may suit some subsets only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from gazerm.features.base import FEATURE_NAMES
from gazerm.table import Table
from gazerm.tune.results import TrialRecord, rank
from gazerm.tune.space import FEATURES_PATH


def ablation_table(trials: Sequence[TrialRecord], metric: str, mode: str) -> Table:
    """One row per feature subset that reported ``metric``, best subset first."""
    best: dict[tuple[int, ...], TrialRecord] = {}
    counts: dict[tuple[int, ...], int] = {}
    for trial in sorted(trials, key=lambda trial: rank(trial, metric, mode)):
        if metric not in trial.metrics or FEATURES_PATH not in trial.params:
            continue
        mask = tuple(json.loads(trial.params[FEATURES_PATH]))
        counts[mask] = counts.get(mask, 0) + 1
        best.setdefault(mask, trial)  # trials come best first; dicts keep that order
    rows = [
        [_names(mask), "".join(map(str, mask)), trial.metrics[metric], counts[mask], trial.name]
        for mask, trial in best.items()
    ]
    return Table(["features", "mask", f"best {metric}", "trials", "best run"], rows)


def _names(mask: Sequence[int]) -> str:
    return "+".join(name for name, used in zip(FEATURE_NAMES, mask, strict=True) if used)
