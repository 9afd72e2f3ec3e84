"""End-to-end: the implicit-feedback ablation as the README runs it (jobs/implicit_ablation.yaml searched
over tune_spaces/implicit_ablation.yaml): text only vs text + implicit behaviour features, on the synthetic
set whose texts carry no signal and whose session logs do. Two trials, one Ray Train run each."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gazerm.cli import app
from gazerm.config import load_config
from gazerm.train.config import TrainJobConfig
from gazerm.tune.search import run_search
from gazerm.tune.space import SearchSpace

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_implicit_features_lift_accuracy_where_the_text_has_no_signal(tmp_path: Path, monkeypatch, ray_local):
    monkeypatch.chdir(tmp_path)  # the job's relative paths (runs/...) resolve here
    written = CliRunner().invoke(
        app, ["demo-data", "runs/data/implicit", "--kind", "implicit", "--rows", "300"]
    )
    assert written.exit_code == 0, written.output
    tracking = {"tracking.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    config = load_config(TrainJobConfig, ROOT / "jobs" / "implicit_ablation.yaml", tracking)
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
