"""Metric names and the rule that picks the split-level ones, without importing torch (searches and
model selection read them)."""

from __future__ import annotations

# What searches and model selection rank runs by unless told otherwise.
DEFAULT_METRIC = "val/accuracy"


def overall_metrics(metrics: dict[str, float], prefix: str = "") -> dict[str, float]:
    """The split-level numbers (``val/accuracy``), without the per-source ones (``val/hh_rlhf/accuracy``)."""
    return {k: v for k, v in metrics.items() if k.count("/") == 1 and k.startswith(prefix)}
