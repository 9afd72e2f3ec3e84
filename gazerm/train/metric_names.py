"""Metric names and the rule that picks the split-level ones, without importing torch (searches and
model selection read them)."""

from __future__ import annotations

# What searches and model selection rank runs by unless told otherwise.
DEFAULT_METRIC = "val/accuracy"

# The validation metrics each loss kind reports (``val/<name>``, ``LossKind.ratios``; besides the count),
# so a config can check ``run.select_metric`` before a run starts.
KIND_METRICS: dict[str, tuple[str, ...]] = {
    "pairwise": ("accuracy", "loss", "reward_margin"),
    "regression": ("mse", "mae"),
    "listwise": ("loss", "accuracy"),
}


def overall_metrics(metrics: dict[str, float], prefix: str = "") -> dict[str, float]:
    """The split-level numbers (``val/accuracy``), without the per-source ones (``val/hh_rlhf/accuracy``)."""
    return {k: v for k, v in metrics.items() if k.count("/") == 1 and k.startswith(prefix)}
