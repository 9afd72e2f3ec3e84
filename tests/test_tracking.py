"""MLflow tracking without Ray: params flattened, run reopened on resume, artifacts beside the store."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gazerm.track.mlflow_tracking import MetricLogger, ended_on_failure, finish_run, flatten, start_run


def test_flatten_nested_config():
    assert flatten({"a": {"b": 1, "c": [0, 1]}, "d": None}) == {"a.b": "1", "a.c": "[0, 1]", "d": "None"}


def test_run_is_reopened_and_artifacts_stay_beside_the_store(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # artifacts must not land in ./mlruns
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    output = tmp_path / "store" / "job"
    run_id = start_run(uri, "exp", "job", {"optim": {"lr": 0.1}}, str(output))
    assert start_run(uri, "exp", "job", {"optim": {"lr": 0.1}}, str(output)) == run_id

    MetricLogger(uri, run_id).log({"train/loss": 0.5, "bad": float("nan")}, step=3)
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"w")
    finish_run(uri, run_id, str(model), {"metrics": {"val/accuracy": 1.0}})

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.data.params == {"optim.lr": "0.1"}
    assert run.data.metrics == {"train/loss": 0.5} and run.info.status == "FINISHED"
    assert (tmp_path / "store" / "mlartifacts").is_dir() and not (tmp_path / "mlruns").exists()
    assert {a.path for a in client.list_artifacts(run_id, "model")} == {"model/weights.bin"}


def test_steps_a_recovered_run_trains_again_are_logged_once(tracking_uri: str):
    """After a recovery, rank 0 replays the steps since the checkpoint: the history keeps one entry per
    step (the first), and the recoveries counter counts up."""
    run_id = start_run(tracking_uri, "exp", "job", {}, None)
    first = MetricLogger(tracking_uri, run_id, once_per_step=True)
    for step in range(1, 6):
        first.log({"train/loss": 1.0 / step}, step)
    first.log({"val/accuracy": 0.6}, step=4)

    recovered = MetricLogger(tracking_uri, run_id, once_per_step=True)  # a new rank 0, resumed at step 3
    assert recovered.count("recoveries") == 1
    for step in range(4, 8):
        recovered.log({"train/loss": 10.0 + step}, step)
        if step == 4:
            recovered.log({"val/accuracy": 0.9}, step)  # replayed evaluation: skipped too
    assert recovered.count("recoveries") == 2

    client = MlflowClient(tracking_uri)
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train/loss"))
    assert history == [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.25), (5, 0.2), (6, 16.0), (7, 17.0)]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val/accuracy")] == [(4, 0.6)]
    recoveries = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "recoveries"))
    assert recoveries == [(1, 1.0), (2, 2.0)]
    # a plain logger (evaluations) appends
    MetricLogger(tracking_uri, run_id).log({"train/loss": 0.0}, step=7)
    assert len(client.get_metric_history(run_id, "train/loss")) == 8


@pytest.mark.parametrize(
    ("raised", "status"), [(RuntimeError("worker lost"), "FAILED"), (KeyboardInterrupt(), "KILLED")]
)
def test_a_job_that_dies_leaves_its_run_failed_or_killed_not_running(tracking_uri: str, raised, status):
    run_id = start_run(tracking_uri, "exp", "job", {}, None)
    with pytest.raises(type(raised)), ended_on_failure(tracking_uri, run_id):
        raise raised
    assert MlflowClient(tracking_uri).get_run(run_id).info.status == status
