"""MLflow tracking: the driver owns the run (params, final model), rank 0 streams step metrics into it.

The run id is kept in ``OUTPUT_DIR/mlflow_run.json`` so a resumed job keeps logging into the
run it started instead of opening a new one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gazerm.errors import ConfigError
from gazerm.storage import Storage

RUN_ID_FILE = "mlflow_run.json"
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"  # mlflow.utils.mlflow_tags; spelled out to keep imports lazy


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → ``a.b.c: value`` strings, the shape MLflow params take."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return flat


def open_store(tracking_uri: str) -> None:
    """Import MLflow and open its store, creating (and migrating) a new sqlite database: seconds that a
    job spends in a background thread while Ray starts, instead of before its first step."""
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri).search_experiments(max_results=1)


def start_run(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    output_dir: str | None,
    parent_run_id: str | None = None,
) -> str:
    """Create (or, when ``output_dir`` records one, reopen) the job's MLflow run; returns its id.

    ``parent_run_id`` nests the run under another (a search's trials), the way the MLflow UI groups runs.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    record = Storage.of(output_dir).child(RUN_ID_FILE) if output_dir else None
    if record and record.exists():
        run_id = json.loads(record.read_text())["run_id"]
        client.update_run(run_id, status="RUNNING")
        return run_id
    experiment_id = _experiment_id(client, experiment, tracking_uri)
    tags = {"gazerm.job": run_name} | ({MLFLOW_PARENT_RUN_ID: parent_run_id} if parent_run_id else {})
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    items = list(flatten(params).items())
    for start in range(0, len(items), 100):  # MLflow caps params per batch call
        client.log_batch(run.info.run_id, params=[_param(k, v) for k, v in items[start : start + 100]])
    if record:
        record.write_text(json.dumps({"run_id": run.info.run_id, "tracking_uri": tracking_uri}))
    return run.info.run_id


def _experiment_id(client: Any, name: str, tracking_uri: str) -> str:
    """The experiment's id, creating it if needed. With a local sqlite store its artifacts go to
    ``mlartifacts/`` beside the database, not to ``./mlruns`` of whatever directory the job ran in."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        location = (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def _param(key: str, value: str):
    from mlflow.entities import Param

    return Param(key, value[:6000])


class MetricLogger:
    """Logs step metrics into an existing run (the rank-0 worker's, or a user's for an evaluation).

    With ``once_per_step`` a metric is logged only past the last step the run already holds for it: a
    run recovered from a checkpoint trains the steps since that checkpoint again (the same ones, in the
    same order), and their metrics must not appear twice in the history.
    """

    def __init__(self, tracking_uri: str, run_id: str, once_per_step: bool = False) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri)
        self.run_id = run_id
        self.once_per_step = once_per_step
        self._logged_through: dict[str, int] = {}  # metric → last step the run holds for it

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = _now_ms()
        entries = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if math.isfinite(float(v)) and not (self.once_per_step and step <= self._last_step(k))
        ]
        if entries:
            self.client.log_batch(self.run_id, metrics=entries)
        self._logged_through |= {entry.key: step for entry in entries}

    def count(self, key: str) -> int:
        """Add one to a counter metric (``recoveries``); its history's steps are 1, 2, … as it counts."""
        value = int(self.client.get_run(self.run_id).data.metrics.get(key, 0)) + 1
        self.client.log_metric(self.run_id, key, value, step=value)
        return value

    def _last_step(self, key: str) -> int:
        if key not in self._logged_through:
            history = self.client.get_metric_history(self.run_id, key)
            self._logged_through[key] = max((metric.step for metric in history), default=-1)
        return self._logged_through[key]


def run_logger(tracking_uri: str, run_id: str) -> MetricLogger:
    """A :class:`MetricLogger` into a run given by the user (e.g. an evaluation of its model), checked up
    front: a mistyped or deleted run is a ConfigError before a long evaluation starts, not after it."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        run = MlflowClient(tracking_uri).get_run(run_id)
    except MlflowException as error:
        raise ConfigError(f"no MLflow run {run_id!r} in {tracking_uri} ({error.message})") from error
    if run.info.lifecycle_stage == "deleted":
        raise ConfigError(f"MLflow run {run_id!r} in {tracking_uri} is deleted")
    return MetricLogger(tracking_uri, run_id)


@contextmanager
def ended_on_failure(tracking_uri: str, run_id: str) -> Iterator[None]:
    """Close the run as ``FAILED`` if the block raises (``KILLED`` on Ctrl-C), so the MLflow UI does not
    show a dead job running forever; a resubmission reopens it."""
    from mlflow.tracking import MlflowClient

    try:
        yield
    except BaseException as error:
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        MlflowClient(tracking_uri).set_terminated(run_id, status=status)
        raise


def finish_run(tracking_uri: str, run_id: str, model_dir: str | None, summary: Mapping[str, Any]) -> None:
    """Attach the trained model directory and the run summary, and close the run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    if model_dir:
        client.log_artifacts(run_id, model_dir, artifact_path="model")
    client.log_dict(run_id, dict(summary), "summary.json")
    client.set_terminated(run_id, status="FINISHED")


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def child_runs(tracking_uri: str, parent_run_id: str) -> list[Any]:
    """The runs nested under ``parent_run_id`` (a search's trials), oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
        max_results=10_000,
    )
    return list(runs)


def find_run(tracking_uri: str, experiment: str, name_or_id: str) -> Any:
    """A run by id, or the newest top-level run of ``experiment`` with that name; raises KeyError if none."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    try:
        return client.get_run(name_or_id)
    except MlflowException:
        pass
    found = client.get_experiment_by_name(experiment)
    runs = (
        client.search_runs(
            [found.experiment_id],
            filter_string=f"attributes.run_name = '{name_or_id}'",
            order_by=["attributes.start_time DESC"],
        )
        if found
        else []
    )
    top_level = [run for run in runs if MLFLOW_PARENT_RUN_ID not in run.data.tags]
    if not top_level:
        raise ConfigError(f"no run named or with id {name_or_id!r} in experiment {experiment!r}")
    return top_level[0]
