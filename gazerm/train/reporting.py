"""Where a training run's rank 0 reports to: step and evaluation metrics, counters (recoveries) and
progress events for the driver's console. The trainer sees only the :class:`Reporter` protocol, so tests
hand it a recorder instead of an MLflow run and a Ray actor."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from gazerm.track.mlflow_tracking import MetricLogger
from gazerm.train.progress import Board, Event


class Reporter(Protocol):
    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Record ``metrics`` at optimizer step ``step``."""

    def count(self, key: str) -> int:
        """Add one to the counter ``key``; its new value."""

    def post(self, event: Event) -> None:
        """Show ``event`` on the driver's console, without waiting for it."""


class RunReporter:
    """The job's MLflow run (each metric once per step, so a recovered run logs no step twice) and the
    driver's progress board."""

    def __init__(self, tracking_uri: str, run_id: str, board: Board) -> None:
        self.metrics = MetricLogger(tracking_uri, run_id, once_per_step=True)
        self.board = board

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.metrics.log(metrics, step)

    def count(self, key: str) -> int:
        return self.metrics.count(key)

    def post(self, event: Event) -> None:
        self.board.post(event)
