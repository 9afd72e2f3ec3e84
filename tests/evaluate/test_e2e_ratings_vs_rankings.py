"""A ratings (regression) and a rankings (pairwise) reward model from the same prepared data, compared.

The shipped job configs are trained as they are, shortened by overrides (6 steps each: two Ray Train
runs, the e2e budget of this module), on ratings that ``gazerm demo-data --kind ratings`` writes. The ratings
model swaps in a tiny BERT encoder with GazeAdd, so encoders (CLS pooling) train end to end here too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gazerm.cli import app
from gazerm.config import load_config
from gazerm.evaluate.consistency import ALL_SOURCES, consistency_report
from gazerm.evaluate.offline import pair_accuracy, read_split, score_rows
from gazerm.model.io import load_reward_model
from gazerm.score import RewardScorer
from gazerm.train.config import TrainJobConfig
from gazerm.train.job import run_training

JOBS = Path(__file__).resolve().parents[2] / "jobs"
SHORT = {
    "run.max_steps": 6,
    "run.eval_every": 6,
    "run.num_workers": 1,  # a run starts ~2.5 s sooner; 2-rank runs are tests/train/test_e2e_train.py's
    "run.micro_batch_size": 16,
    "data.max_length": 64,
    "data.prepare.gaze.backend": "local",
}


def _job(name: str, overrides: dict | None = None) -> TrainJobConfig:
    return load_config(TrainJobConfig, JOBS / name, SHORT | (overrides or {}))


def test_the_two_jobs_share_their_data_and_differ_in_the_loss():
    ratings, rankings = _job("ratings_rm.yaml"), _job("rankings_rm.yaml")
    assert ratings.data.prepare == rankings.data.prepare
    assert ratings.data.prepare.sources[0].format == "helpsteer2"
    assert (ratings.loss.kind, ratings.model.num_outputs) == ("regression", 5)
    assert (rankings.loss.kind, rankings.model.num_outputs) == ("pairwise", 1)
    assert ratings.model.backbone == rankings.model.backbone == "tiny-llama"
    assert not ratings.run.use_gpu and ratings.output_dir != rankings.output_dir


@pytest.mark.slow
@pytest.mark.usefixtures("tracking_uri")  # tmp_path/mlflow.db: a copy of an empty store, not created
def test_ratings_and_rankings_models_are_compared_on_their_data(tmp_path: Path, monkeypatch, ray_local):
    monkeypatch.chdir(tmp_path)
    source = _job("ratings_rm.yaml").data.prepare.sources[0].path
    written = CliRunner().invoke(
        app, ["demo-data", source, "--kind", "ratings", "--rows", "100", "--seed", "4"]
    )
    assert written.exit_code == 0, written.output
    tracking = {"tracking.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}

    encoder = {
        "model.backbone": "tiny-bert",
        "model.fusion": "add",
        "model.lora.target_modules": ["query", "value"],
    }
    ratings = run_training(_job("ratings_rm.yaml", tracking | encoder))
    dataset = _job("ratings_rm.yaml").data.prepare.output_dir
    prepared_at = (Path(dataset) / "manifest.json").stat().st_mtime_ns
    rankings = run_training(_job("rankings_rm.yaml", tracking))
    assert (Path(dataset) / "manifest.json").stat().st_mtime_ns == prepared_at  # reused, not re-prepared
    assert {"val/mse", "val/mae", "val/helpsteer2/mse"} <= set(ratings.metrics)
    assert "val/accuracy" in rankings.metrics
    encoder_model, _, encoder_config = load_reward_model(ratings.model_dir)
    assert (encoder_config.backbone, encoder_config.num_outputs, encoder_model.pooling) == (
        "tiny-bert",
        5,
        "cls",
    )
    assert encoder_model.value_head.bias.abs().min() > 0  # ratings are absolute: the bias learns their mean

    report = consistency_report(ratings.model_dir, rankings.model_dir, dataset)

    rows = read_split(dataset, "validation")
    by_ratings = score_rows(RewardScorer(ratings.model_dir), rows)
    by_rankings = score_rows(RewardScorer(rankings.model_dir), rows)
    assert all(len(row["responses"]) == 2 and len(row["pairs"]) == 1 for row in rows)  # easy 4s vs hard 0s
    same = [
        np.sign(a[0] - a[1]) == np.sign(b[0] - b[1]) for a, b in zip(by_ratings, by_rankings, strict=True)
    ]
    overall = report.by_source[ALL_SOURCES]
    assert overall.examples == len(rows) > 0 and list(report.by_source) == [ALL_SOURCES, "helpsteer2"]
    assert overall.agreement.pairs == len(rows)
    assert overall.agreement.rate == pytest.approx(np.mean(same))
    assert overall.ratings_accuracy.pairs == overall.rankings_accuracy.pairs == len(rows)
    assert overall.ratings_accuracy.accuracy == pytest.approx(pair_accuracy(rows, by_ratings).accuracy)
    assert overall.rankings_accuracy.accuracy == pytest.approx(pair_accuracy(rows, by_rankings).accuracy)
    assert (
        0.0 <= overall.ratings_accuracy.accuracy <= 1.0 and 0.0 <= overall.rankings_accuracy.accuracy <= 1.0
    )
    assert report.label_agreement.pairs == 0  # HelpSteer2 holds ratings only: no ranking-derived labels
