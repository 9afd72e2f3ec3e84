"""``gazerm select``: a finished search read back from MLflow, so the CLI shows what the UI shows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gazerm.table import Table
from gazerm.train.metric_names import DEFAULT_METRIC
from gazerm.tune.results import TrialRecord, comparison_table


@dataclass
class SearchReport:
    parent_run_id: str
    trials: Table
    model_name: str | None
    versions: Table


def search_report(tracking_uri: str, experiment: str, search: str) -> SearchReport:
    """The trials of ``search`` (parent run name or id), best first, and its registered model versions."""
    from gazerm.track.mlflow_tracking import child_runs, find_run
    from gazerm.track.registry import REGISTERED_TAG, model_versions

    parent = find_run(tracking_uri, experiment, search)
    params = parent.data.params
    trials = [TrialRecord.from_run(run) for run in child_runs(tracking_uri, parent.info.run_id)]
    metric, mode = params.get("search.metric", DEFAULT_METRIC), params.get("search.mode", "max")
    registered = parent.data.tags.get(REGISTERED_TAG)
    model_name = registered.rpartition("/")[0] if registered else None
    versions = model_versions(tracking_uri, model_name) if model_name else []
    return SearchReport(
        parent.info.run_id,
        comparison_table(trials, metric, mode),
        model_name,
        versions_table(versions, metric),
    )


def versions_table(versions: Sequence[Any], metric: str) -> Table:
    """Registered versions newest first, with their aliases and the metric they were registered with."""
    rows = [
        [
            version.version,
            ", ".join(version.aliases) or None,
            _number(version.tags.get(metric)),
            version.run_id,
        ]
        for version in versions
    ]
    return Table(["version", "aliases", metric, "run id"], rows)


def _number(text: str | None) -> float | None:
    return float(text) if text is not None else None
