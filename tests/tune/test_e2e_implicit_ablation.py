"""End-to-end search: the implicit-feedback ablation as the README runs it (jobs/implicit_ablation.yaml
searched over tune_spaces/implicit_ablation.yaml), on the synthetic set whose texts carry no signal and whose
session logs do: text only vs text + implicit behaviour features, two trials of 2 Ray Train workers each, one
at a time. Then what the search leaves: its MLflow record (a parent run and a run per trial), the registered
best model, the comparison and ablation tables, read back and promoted through ``gazerm select``.

The suite's only e2e search (each trial is mostly Ray Train's start-up, half a minute here): the other
shipped spaces are checked by unit tests (tests/tune/test_space.py expands the tiny space's grid, and the
feature-subset ablation table is tests/tune/test_tables.py's).
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from gazerm.cli import app
from gazerm.config import load_config
from gazerm.train.config import TrainJobConfig
from gazerm.tune.search import run_search
from gazerm.tune.space import SearchSpace

# tmp_path/mlflow.db starts as a copy of an empty store (tests/conftest.py): creating one costs a second
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("tracking_uri")]

ROOT = Path(__file__).resolve().parents[2]


def test_implicit_features_lift_accuracy_and_the_search_registers_the_best(
    tmp_path: Path, monkeypatch, ray_local
):
    monkeypatch.chdir(tmp_path)  # the job's relative paths (runs/...) resolve here
    written = CliRunner().invoke(
        app, ["demo-data", "runs/data/implicit", "--kind", "implicit", "--rows", "300"]
    )
    assert written.exit_code == 0, written.output
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = load_config(
        TrainJobConfig, ROOT / "jobs" / "implicit_ablation.yaml", {"tracking.tracking_uri": tracking_uri}
    )
    space = load_config(
        SearchSpace, ROOT / "tune_spaces" / "implicit_ablation.yaml", {"max_concurrent_trials": 1}
    )

    outcome = run_search(config, space)

    accuracy = {
        trial.params["model.implicit_features"]: trial.metrics["val/accuracy"] for trial in outcome.trials
    }
    assert set(accuracy) == {"False", "True"}
    assert accuracy["True"] >= 0.85, accuracy  # behaviour separates chosen from rejected
    assert accuracy["False"] <= 0.75, accuracy  # ~60 validation pairs: chance is 0.5 ± 0.07
    assert outcome.best.params["model.implicit_features"] == "True"
    assert "model.implicit_features" in outcome.comparison.headers

    client = MlflowClient(tracking_uri)
    parent = client.get_run(outcome.parent_run_id)
    name = outcome.name  # the parent run's and the registered model's
    assert (parent.info.run_name, parent.info.status, outcome.model_version.name) == (name, "FINISHED", name)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert all(c.data.params["run.max_steps"] == "20" for c in children)
    assert all(client.get_metric_history(c.info.run_id, "train/loss") for c in children)
    best_accuracy = max(c.data.metrics["val/accuracy"] for c in children)

    version = client.get_model_version_by_alias(name, "best")
    best = client.get_run(version.run_id)
    assert (
        version.run_id == outcome.best.run_id and best.data.tags["mlflow.parentRunId"] == parent.info.run_id
    )
    assert float(version.tags["val/accuracy"]) == best.data.metrics["val/accuracy"] == best_accuracy
    assert version.source.endswith("/model")
    assert {a.path for a in client.list_artifacts(best.info.run_id, "model")} >= {"model/config.yaml"}
    assert parent.data.metrics["val/accuracy"] == best_accuracy

    # Both arms read the same gaze features (none are predicted): one ablation row, of both trials.
    ablation_csv = client.download_artifacts(parent.info.run_id, "ablation.csv", str(tmp_path))
    (row,) = list(csv.DictReader(io.StringIO(Path(ablation_csv).read_text())))
    assert [int(flag) for flag in row["mask"]] == json.loads(children[0].data.params["model.features_used"])
    assert (int(row["trials"]), float(row["best val/accuracy"])) == (2, best_accuracy)
    trials_md = client.download_artifacts(parent.info.run_id, "trials.md", str(tmp_path))
    assert "model.implicit_features" in Path(trials_md).read_text()

    runner = CliRunner()
    where = ["--experiment", config.tracking.experiment, "--tracking-uri", tracking_uri]
    listed = runner.invoke(app, ["select", "list", name, *where])
    assert listed.exit_code == 0, listed.output
    assert all(c.info.run_name in listed.output for c in children)
    trials_part, versions_part = listed.output.split(f"versions of registered model {name}")
    assert "model.implicit_features" in trials_part and "run.max_steps" not in trials_part  # what varies
    assert re.search(rf"\|\s*{version.version}\s*\|\s*best\s*\|", versions_part)
    promote = ["select", "promote", name, str(version.version), "--alias", "champion"]
    promoted = runner.invoke(app, [*promote, "--tracking-uri", tracking_uri])
    assert promoted.exit_code == 0, promoted.output
    assert client.get_model_version_by_alias(name, "champion").version == version.version
