"""MLflow tracking without Ray: params flattened, run reopened on resume, artifacts beside the store."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from gazerm.track.mlflow_tracking import MetricLogger, finish_run, flatten, start_run


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
