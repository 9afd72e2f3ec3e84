"""End-to-end training: 2 Ray Train workers, DeepSpeed on CPU (gloo), tiny random-init backbones.

One Ray instance serves the whole session (``ray_local``); each test trains a few steps on a
small synthetic readability set prepared once for the session (``dataset_dir``, conftest).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gazerm.data.config import GazeSpec, PrepareConfig, SourceSpec
from gazerm.data.prepare import prepare
from gazerm.data.synthetic import write_readability_lists
from gazerm.model.config import LossConfig, ModelConfig
from gazerm.model.io import load_reward_model
from gazerm.train.config import DataConfig, OptimConfig, RunConfig, TrackingConfig, TrainJobConfig
from gazerm.train.job import run_training

# tmp_path/mlflow.db starts as a copy of an empty store (tests/conftest.py): creating one costs a second
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("tracking_uri")]


def _job(
    tmp_path: Path, dataset_dir: str, model: ModelConfig, loss: LossConfig | None = None, **run: int
) -> TrainJobConfig:
    return TrainJobConfig(
        name=f"test-{model.backbone}-{model.fusion}",
        output_dir=str(tmp_path / "run"),
        data=DataConfig(dataset_dir=dataset_dir, prepare=None, max_length=64),
        model=model,
        loss=loss or LossConfig(),
        optim=OptimConfig(lr=5e-3, warmup_ratio=0.0),
        run=RunConfig(**{"num_workers": 2, "micro_batch_size": 8, "max_steps": 8, "eval_every": 4, **run}),
        tracking=TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
    )


def _history(client: MlflowClient, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


# Each backbone and fusion mode trains end to end somewhere in the suite: tiny-mistral + concat (ZeRO-3)
# here, tiny-llama + concat in the quickstart below and + add and none in tests/train/test_e2e_gaze_signal.py,
# tiny-bert + add in tests/evaluate/test_e2e_ratings_vs_rankings.py. Every backbone × fusion pair is
# covered by the model's unit tests; an e2e run costs half a minute here.
def test_a_zero3_run_records_itself_and_resumes_from_its_checkpoint(
    tmp_path: Path, dataset_dir: str, ray_local, capfd
):
    """A run stopped after 4 steps is complete (MLflow record, checkpoints, exported model); run again with
    8 steps it resumes from its checkpoint into the same MLflow run. Also the object-store path: output_dir
    is a URI (file:// here; s3:// and gs:// take the same pyarrow-filesystem code), read and written by
    Ray Train and by the driver alike."""
    backbone, fusion = "tiny-mistral", "concat"
    output_uri = (tmp_path / "run").as_uri()

    def job(max_steps: int) -> TrainJobConfig:
        model = ModelConfig(backbone=backbone, fusion=fusion)
        config = _job(tmp_path, dataset_dir, model, zero_stage=3, max_steps=max_steps)
        return config.model_copy(update={"output_dir": output_uri})

    first = run_training(job(4))

    client = MlflowClient(first.tracking_uri)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert (run.data.params["model.backbone"], run.data.params["model.fusion"]) == (backbone, fusion)
    assert [m.step for m in client.get_metric_history(first.run_id, "val/accuracy")] == [4]
    assert 0.0 <= first.metrics["val/accuracy"] <= 1.0
    assert first.metrics["val/count"] == pytest.approx(run.data.metrics["val/count"])
    assert run.data.metrics["train/grad_norm"] > 0 and run.data.metrics["train/peak_memory_gib"] > 0.1
    checkpoints = [path for path in (tmp_path / "run" / "ray").glob("checkpoint_*") if path.is_dir()]
    assert checkpoints and all((c / "deepspeed").is_dir() for c in checkpoints)
    assert {a.path for a in client.list_artifacts(first.run_id, "model")} >= {
        "model/config.yaml",
        "model/heads.safetensors",
    }

    second = run_training(job(8))

    assert second.run_id == first.run_id
    assert f"resuming from {output_uri}/ray/checkpoint_" in capfd.readouterr().out
    losses = _history(client, second.run_id, "train/loss")
    steps = [m.step for m in client.get_metric_history(second.run_id, "train/loss")]
    assert sorted(steps) == list(range(1, 9))  # steps 1-4 once, then 5-8: nothing trained twice
    assert statistics.mean(losses[-3:]) < losses[0]
    assert [m.step for m in client.get_metric_history(second.run_id, "val/accuracy")] == [4, 8]
    assert client.get_run(second.run_id).data.params["run.zero_stage"] == "3"
    assert second.model_dir == f"{output_uri}/model"
    model, _, config = load_reward_model(tmp_path / "run" / "model")
    assert config.fusion == fusion and model.projector is not None
    assert model.value_head.weight.abs().sum() > 0  # the gathered ZeRO-3 weights, not empty partitions
    assert not model.value_head.bias.any()  # frozen at 0: a pairwise loss gives it no signal


def test_listwise_loss_on_ranked_lists(tmp_path: Path, ray_local):
    """Text-score lists of four responses → Plackett-Luce over each list; accuracy over its ordered pairs."""
    source = write_readability_lists(tmp_path / "lists.jsonl", n=100, seed=2)
    prepared = PrepareConfig(
        sources=[SourceSpec(format="text_score", path=str(source))],
        output_dir=str(tmp_path / "shards"),
        splits={"train": 0.8, "validation": 0.2, "test": 0.0},
        gaze=GazeSpec(predictor="reading_model", backend="local"),
    )
    manifest = prepare(prepared)
    job = _job(
        tmp_path,
        prepared.output_dir,
        ModelConfig(fusion="add"),
        LossConfig(kind="listwise"),
        num_workers=1,  # a run starts ~2.5 s sooner; the other runs here train on 2 ranks
        micro_batch_size=8,
    )
    outcome = run_training(job)

    client = MlflowClient(outcome.tracking_uri)
    losses = _history(client, outcome.run_id, "train/loss")
    assert len(losses) == 8 and statistics.mean(losses[-3:]) < losses[0]
    assert outcome.metrics["val/count"] == manifest.rows("validation")  # one unit per list
    assert 0.5 < outcome.metrics["val/accuracy"] <= 1.0  # over 6 ordered pairs per list; chance is 0.5


def test_quickstart_command_learns_the_synthetic_rule_and_keeps_its_console_short(tmp_path: Path, ray_local):
    """The README's main job as a user runs it (a process of its own, joining the session's Ray as
    ``ray job submit`` would), smaller: the known rule (readable text wins) is learnt, and the console
    shows gazerm's progress and where the results are, not the workers' and libraries' logs."""
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    command = [sys.executable, "-m", "gazerm", "train", "--set", "data.synthetic_rows=400"]
    command += ["--set", "data.prepare.gaze.backend=local"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    console = (result.stdout + result.stderr).splitlines()
    assert result.returncode == 0, "\n".join(console[-60:])
    assert len(console) <= 40, "\n".join(console)
    assert any(line.startswith("[gazerm] eval at step") for line in console)
    last = result.stdout.splitlines()[-3:]
    assert last[0].startswith("model:") and last[1].startswith("mlflow run:")
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    runs = client.search_runs(experiment_ids=[client.get_experiment_by_name("gazerm").experiment_id])
    assert len(runs) == 1
    assert runs[0].data.metrics["val/accuracy"] >= 0.85
    inputs = json.loads((tmp_path / "runs" / "quickstart" / "model" / "inputs.json").read_text())
    assert inputs == {
        "gaze": {**inputs["gaze"], "predictor": "reading_model"},
        "max_length": 128,
        "template": "plain",
    }
