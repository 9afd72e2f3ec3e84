"""Scoring a prepared split with a saved reward model, outside of training.

Every response of every example is scored once (:class:`~gazerm.score.RewardScorer`, so gaze is
computed the way the model was trained); accuracy and agreement are then read off the labelled
pairs. The evaluation reports (staged training, ratings-vs-rankings consistency) build on this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from gazerm.data.shards import verify
from gazerm.errors import ConfigError
from gazerm.score import RewardScorer

LABEL_COLUMNS = (
    "example_id",
    "source",
    "domain",
    "prompt",
    "context",
    "responses",
    "pairs",
    "scores",
    "attribute_scores",
    "ranking",
    "implicit",
)


def read_split(dataset_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """The rows of one split of a prepared dataset (label columns only), in shard order."""
    manifest = verify(dataset_dir)
    paths = manifest.shard_paths(dataset_dir, split)
    if not paths:
        raise ConfigError(f"{dataset_dir}: no {split!r} split (it has {sorted(manifest.splits)})")
    return [row for path in paths for row in pq.read_table(path, columns=list(LABEL_COLUMNS)).to_pylist()]


def check_weights(num_outputs: int, weights: Sequence[float] | None) -> None:
    """Attribute weights must match a multi-attribute head; a single-output model takes none."""
    if weights is None:
        return
    if num_outputs == 1:
        raise ConfigError("attribute weights given, but the model has a single output")
    if len(weights) != num_outputs:
        raise ConfigError(f"{len(weights)} attribute weights for a model with {num_outputs} outputs")


def scalar_rewards(rewards: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """One reward per response: a multi-attribute head's outputs combined by ``weights`` (default: mean)."""
    check_weights(1 if rewards.ndim == 1 else rewards.shape[1], weights)
    if rewards.ndim == 1:
        return rewards
    return rewards @ (
        np.full(rewards.shape[1], 1 / rewards.shape[1]) if weights is None else np.asarray(weights)
    )


def score_rows(
    scorer: RewardScorer, rows: list[dict[str, Any]], weights: Sequence[float] | None = None
) -> list[np.ndarray]:
    """Per row, the scalar reward of each of its responses (all responses scored in one pass, with their
    implicit features where the split has them)."""
    prompts, responses, contexts, implicit = [], [], [], []
    for row in rows:
        count = len(row["responses"])
        prompts += [row["prompt"]] * count
        responses += row["responses"]
        contexts += [row["context"]] * count
        implicit += row.get("implicit") or [None] * count
    rewards = scorer.score(prompts, responses, contexts, progress=len(prompts) > 64, implicit=implicit)
    flat = scalar_rewards(rewards, weights)
    bounds = np.cumsum([0] + [len(row["responses"]) for row in rows])
    return [flat[start:end] for start, end in pairwise(bounds)]


@dataclass(frozen=True)
class PairAccuracy:
    accuracy: float
    pairs: int


def pair_accuracy(rows: list[dict[str, Any]], rewards: list[np.ndarray]) -> PairAccuracy:
    """Share of labelled pairs whose chosen response gets the higher reward (a tie counts half)."""
    wins, total = 0.0, 0
    for row, reward in zip(rows, rewards, strict=True):
        for pair in row["pairs"] or []:
            difference = reward[pair["chosen"]] - reward[pair["rejected"]]
            wins += 1.0 if difference > 0 else 0.5 if difference == 0 else 0.0
            total += 1
    return PairAccuracy(wins / total if total else float("nan"), total)


def evaluate_split(
    model_dir: str | Path, dataset_dir: str | Path, split: str = "validation", batch_size: int = 32
) -> PairAccuracy:
    """Pairwise accuracy of a saved model on one split of a prepared dataset."""
    rows = read_split(dataset_dir, split)
    return pair_accuracy(rows, score_rows(RewardScorer(model_dir, batch_size=batch_size), rows))
