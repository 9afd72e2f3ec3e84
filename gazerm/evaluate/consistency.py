"""Ratings vs rankings: do a regression reward model and a pairwise one, trained on the same data, prefer the
same responses, and do the data's own rating and ranking labels agree?

The sparse-feedback study (Bansal et al., "Peering Through Preferences", 2023) found that preferences
read off absolute ratings and preferences collected as rankings often disagree, and that reward models
trained on each inherit that. This report measures both on a prepared split:

* **model agreement** over every pair of responses of every example (labelled or not): the two models
  agree on a pair when they order it the same way. A tie in both counts as agreement, a tie in one only
  as disagreement; ``ties`` counts the pairs where either model ties.
* each model's **accuracy** on the labelled pairs (:func:`~gazerm.evaluate.offline.pair_accuracy`).
* **label agreement**: where a ranking-derived label (a ``ranking``, or the pairs of an example without
  ratings) orders two responses of a prompt that are also rated somewhere in the split, whether the
  higher-rated one is the preferred one. A rating tie does not agree (the ranking has a preference) and
  is counted in ``ties``. Responses are matched by prompt and text; with no such pair the count is 0.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

import numpy as np

from gazerm.data.schema import pairs_from_ranking
from gazerm.errors import ConfigError
from gazerm.evaluate.offline import PairAccuracy, pair_accuracy, read_split, score_rows
from gazerm.score import RewardScorer
from gazerm.table import Table

ALL_SOURCES = "all"


@dataclass(frozen=True)
class Agreement:
    """How often two preference sources order the same response pairs the same way (nan: no pairs)."""

    rate: float
    pairs: int
    ties: int


@dataclass(frozen=True)
class ModelComparison:
    """The two models on one group of examples (the whole split or one source)."""

    examples: int
    agreement: Agreement
    ratings_accuracy: PairAccuracy
    rankings_accuracy: PairAccuracy


@dataclass(frozen=True)
class ConsistencyReport:
    split: str
    by_source: dict[str, ModelComparison]  # ALL_SOURCES first, then each source
    label_agreement: Agreement

    def table(self) -> str:
        """A markdown table of the model comparison per source, then the label agreement."""
        headers = ["source", "examples", "response pairs", "models agree", "labelled pairs"]
        rows = [
            [
                source,
                group.examples,
                group.agreement.pairs,
                group.agreement.rate,
                group.ratings_accuracy.pairs,
                group.ratings_accuracy.accuracy,
                group.rankings_accuracy.accuracy,
            ]
            for source, group in self.by_source.items()
        ]
        comparison = Table([*headers, "ratings RM acc", "rankings RM acc"], rows).markdown()
        labels = self.label_agreement
        return (
            f"split {self.split}: ratings RM vs rankings RM\n{comparison}"
            f"rating- vs ranking-derived labels: agree {labels.rate:.3f} on {labels.pairs} pairs "
            f"({labels.ties} rating ties)"
        )

    def write(self, path: str | Path) -> Path:
        """The report as JSON (nan, for an empty group, as null)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_without_nan(asdict(self)), indent=2) + "\n")
        return path


def consistency_report(
    ratings_model: str | Path,
    rankings_model: str | Path,
    dataset_dir: str | Path,
    split: str = "validation",
    weights: Sequence[float] | None = None,
    batch_size: int = 32,
) -> ConsistencyReport:
    """Score every response of the split with both models and compare them (``weights`` combine the
    ratings model's attributes; default: their mean)."""
    rows = read_split(dataset_dir, split)
    if not rows:
        raise ConfigError(f"{dataset_dir}: the {split!r} split has no rows to compare on")
    ratings = score_rows(RewardScorer(ratings_model, batch_size=batch_size), rows, weights)
    rankings = score_rows(RewardScorer(rankings_model, batch_size=batch_size), rows)
    return compare(split, rows, ratings, rankings)


def compare(
    split: str, rows: list[dict[str, Any]], ratings: list[np.ndarray], rankings: list[np.ndarray]
) -> ConsistencyReport:
    """The report from per-row rewards of each model (as :func:`score_rows` gives them)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        groups[row["source"]].append(index)
    by_source = {ALL_SOURCES: list(range(len(rows))), **dict(sorted(groups.items()))}
    return ConsistencyReport(
        split=split,
        by_source={
            source: _compare_models(
                [rows[i] for i in picked], [ratings[i] for i in picked], [rankings[i] for i in picked]
            )
            for source, picked in by_source.items()
        },
        label_agreement=label_agreement(rows),
    )


def _compare_models(
    rows: list[dict[str, Any]], ratings: list[np.ndarray], rankings: list[np.ndarray]
) -> ModelComparison:
    return ModelComparison(
        examples=len(rows),
        agreement=model_agreement(ratings, rankings),
        ratings_accuracy=pair_accuracy(rows, ratings),
        rankings_accuracy=pair_accuracy(rows, rankings),
    )


def model_agreement(first: list[np.ndarray], second: list[np.ndarray]) -> Agreement:
    """Over every pair of responses of every example: how often both reward lists order it the same way."""
    agree = pairs = ties = 0
    for a, b in zip(first, second, strict=True):
        i, j = np.triu_indices(len(a), k=1)
        sign_a, sign_b = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
        agree += int((sign_a == sign_b).sum())
        ties += int(((sign_a == 0) | (sign_b == 0)).sum())
        pairs += len(i)
    return Agreement(agree / pairs if pairs else math.nan, pairs, ties)


def label_agreement(rows: list[dict[str, Any]]) -> Agreement:
    """How often ranking-derived labels prefer the higher-rated response, where both are rated."""
    ratings: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in rows:
        for response, score in zip(row["responses"], row["scores"], strict=True) if row["scores"] else ():
            ratings[row["prompt"], response].append(score)
    agree = pairs = ties = 0
    for prompt, better, worse in _ranked_pairs(rows):
        if (prompt, better) in ratings and (prompt, worse) in ratings:
            gap = fmean(ratings[prompt, better]) - fmean(ratings[prompt, worse])
            agree += gap > 0
            ties += gap == 0
            pairs += 1
    return Agreement(agree / pairs if pairs else math.nan, pairs, ties)


def _ranked_pairs(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """``(prompt, preferred, other)`` texts from rankings, and from the pairs of examples without ratings."""
    found = []
    for row in rows:
        if row["ranking"]:
            pairs = [(p.chosen, p.rejected) for p in pairs_from_ranking(row["ranking"])]
        elif row["scores"] is None:
            pairs = [(p["chosen"], p["rejected"]) for p in row["pairs"] or []]
        else:
            continue
        found += [(row["prompt"], row["responses"][c], row["responses"][r]) for c, r in pairs]
    return found


def _without_nan(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value
