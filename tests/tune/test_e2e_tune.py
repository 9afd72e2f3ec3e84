"""End-to-end search: the shipped tiny space less its fusion grid (2 trials, one per feature subset, 2 Ray
Train workers each, one trial at a time), then the MLflow record of it read back through ``gazerm select``.
The grid's expansion into trials is unit-tested (tests/tune/test_space.py); each trial here is mostly
Ray Train's start-up."""

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
from gazerm.train.config import DataConfig, RunConfig, TrackingConfig, TrainJobConfig
from gazerm.tune.search import run_search
from gazerm.tune.space import SearchSpace

pytestmark = pytest.mark.slow

TINY = Path(__file__).resolve().parents[2] / "tune_spaces" / "tiny.yaml"


def test_tiny_search_records_trials_registers_the_best_and_writes_the_ablation(
    tmp_path: Path, dataset_dir: str, ray_local
):
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = TrainJobConfig(
        name="e2e",
        output_dir=str(tmp_path / "base"),
        data=DataConfig(dataset_dir=dataset_dir, prepare=None, max_length=64),
        run=RunConfig(num_workers=2, micro_batch_size=8),
        tracking=TrackingConfig(tracking_uri=tracking_uri),
    )
    space = load_config(SearchSpace, TINY, {"max_concurrent_trials": 1})
    space = space.model_copy(
        update={"params": {k: v for k, v in space.params.items() if k != "model.fusion"}}
    )

    outcome = run_search(config, space)

    client = MlflowClient(tracking_uri)
    parent = client.get_run(outcome.parent_run_id)
    assert (parent.info.run_name, parent.info.status) == ("e2e-tiny", "FINISHED")
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert len(children) == 2
    assert {c.data.params["model.features_used"] for c in children} == {"[1, 1, 1, 1, 1]", "[0, 1, 0, 1, 0]"}
    assert all(c.data.params["run.max_steps"] == "8" for c in children)
    assert all(client.get_metric_history(c.info.run_id, "train/loss") for c in children)
    assert all(c.info.status == "FINISHED" for c in children)
    best_accuracy = max(c.data.metrics["val/accuracy"] for c in children)

    version = client.get_model_version_by_alias("e2e-tiny", "best")
    best = client.get_run(version.run_id)
    assert (
        version.run_id == outcome.best.run_id and best.data.tags["mlflow.parentRunId"] == parent.info.run_id
    )
    assert float(version.tags["val/accuracy"]) == best.data.metrics["val/accuracy"] == best_accuracy
    assert version.source.endswith("/model")
    assert {a.path for a in client.list_artifacts(best.info.run_id, "model")} >= {"model/config.yaml"}
    assert parent.data.metrics["val/accuracy"] == best.data.metrics["val/accuracy"]

    ablation_csv = client.download_artifacts(parent.info.run_id, "ablation.csv", str(tmp_path))
    rows = list(csv.DictReader(io.StringIO(Path(ablation_csv).read_text())))
    for row in rows:
        same_subset = [
            c
            for c in children
            if json.loads(c.data.params["model.features_used"]) == [int(flag) for flag in row["mask"]]
        ]
        assert float(row["best val/accuracy"]) == max(c.data.metrics["val/accuracy"] for c in same_subset)
        assert int(row["trials"]) == 1
    assert {row["features"] for row in rows} == {"nFix+FFD+GPT+TRT+fixProp", "FFD+TRT"}
    assert (
        "| FFD+TRT"
        in Path(client.download_artifacts(parent.info.run_id, "ablation.md", str(tmp_path))).read_text()
    )

    runner = CliRunner()
    listed = runner.invoke(app, ["select", "list", "e2e-tiny", "--tracking-uri", tracking_uri])
    assert listed.exit_code == 0, listed.output
    assert all(c.info.run_name in listed.output for c in children)
    trials_part, versions_part = listed.output.split("versions of registered model e2e-tiny")
    assert "model.features_used" in trials_part and "run.max_steps" not in trials_part  # only what varies
    assert re.search(rf"\|\s*{version.version}\s*\|\s*best\s*\|", versions_part)
    promote = ["select", "promote", "e2e-tiny", str(version.version), "--alias", "champion"]
    promoted = runner.invoke(app, [*promote, "--tracking-uri", tracking_uri])
    assert promoted.exit_code == 0, promoted.output
    assert client.get_model_version_by_alias("e2e-tiny", "champion").version == version.version
