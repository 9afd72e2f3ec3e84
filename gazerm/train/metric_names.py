"""Metric names and the rule that picks the split-level ones, without importing torch (searches and
model selection read them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gazerm.train.config import RunConfig

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


def summarize_test(metrics: dict[str, float], run: RunConfig) -> str:
    """One line on what the exported model scores on the test split, and which evaluation it is."""
    chosen = f"step {int(metrics['selected_step'])}"
    if run.select == "best":
        chosen += f", best {run.select_metric}"
    overall = overall_metrics(metrics, "test/")
    scores = ", ".join(f"{name.removeprefix('test/')} {value:.4g}" for name, value in overall.items())
    return f"test split with the model of {chosen}: {scores or 'no test units'}"
