"""Gaze carries signal: on pairs whose texts are drawn alike and whose preference shows only in how
people read them (``write_gaze_decided_set``, recorded fixations), a text-only reward model stays near
chance and GazeConcat and GazeAdd learn the preference. The proof that the fusion path learns from gaze
at all, through the whole system: recorded fixations → prepare → Ray Train + DeepSpeed → MLflow.

The GazeConcat run also selects its model by validation accuracy (``run.select: best``, a tie keeping the
earlier evaluation as the reference does) and scores the test split with it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gazerm.data.shards import Manifest
from gazerm.model.config import ModelConfig
from gazerm.train.config import DataConfig, OptimConfig, RunConfig, TrackingConfig, TrainJobConfig
from gazerm.train.job import run_training
from tests.helpers import prepare_gaze_decided

# tmp_path/mlflow.db starts as a copy of an empty store (tests/conftest.py): creating one costs a second
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("tracking_uri")]


@pytest.fixture(scope="module")
def gaze_decided(tmp_path_factory) -> tuple[str, Manifest]:
    root = tmp_path_factory.mktemp("gaze-decided")
    return str(root / "shards"), prepare_gaze_decided(root, n=400, seed=7)


def train(tmp_path: Path, dataset: str, fusion: str, **run) -> tuple:
    job = TrainJobConfig(
        name=f"gaze-signal-{fusion}",
        output_dir=str(tmp_path / fusion),
        data=DataConfig(dataset_dir=dataset, prepare=None, max_length=64),
        model=ModelConfig(fusion=fusion),
        optim=OptimConfig(lr=5e-3, warmup_ratio=0.0),
        # One worker (a run starts ~2.5 s sooner): 2-rank runs are tests/train/test_e2e_train.py's.
        run=RunConfig(num_workers=1, micro_batch_size=16, max_steps=24, eval_every=8, **run),
        tracking=TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
    )
    outcome = run_training(job)
    return outcome, MlflowClient(outcome.tracking_uri)


def test_text_alone_stays_near_chance(tmp_path, gaze_decided, ray_local):
    outcome, _ = train(tmp_path, gaze_decided[0], "none")
    assert 0.3 <= outcome.metrics["val/accuracy"] <= 0.7


def test_gaze_add_learns_what_only_gaze_shows(tmp_path, gaze_decided, ray_local):
    outcome, _ = train(tmp_path, gaze_decided[0], "add")
    assert outcome.metrics["val/accuracy"] >= 0.85


def test_gaze_concat_learns_it_and_its_best_model_scores_the_test_split(tmp_path, gaze_decided, ray_local):
    dataset, manifest = gaze_decided
    # The reference's rule: a later evaluation must be strictly better (Ray keeps that checkpoint too).
    outcome, client = train(
        tmp_path, dataset, "concat", select="best", select_ties="earlier", keep_checkpoints=1
    )
    history = sorted(client.get_metric_history(outcome.run_id, "val/accuracy"), key=lambda m: m.step)
    assert [m.step for m in history] == [8, 16, 24]
    best = max(history, key=lambda m: (m.value, -m.step))  # ties go to the earlier evaluation
    assert best.value >= 0.85
    assert outcome.metrics["selected_step"] == best.step
    assert outcome.metrics["test/count"] == manifest.rows("test")  # every test pair, once
    assert outcome.metrics["test/accuracy"] >= 0.85
    logged = client.get_run(outcome.run_id).data.metrics
    assert logged["test/accuracy"] == pytest.approx(outcome.metrics["test/accuracy"])
