"""``run.launcher: local``: the ranks as processes on this machine (torch's elastic launcher, Ray Train's
local mode), no Ray started. Checkpoints are kept as Ray Train keeps them, a run resumes and survives a
lost rank from them, and a rank's mistake ends the run at once as one line."""

from __future__ import annotations

import multiprocessing
import re
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import gazerm.train.job as job_module
from gazerm.cli import app
from gazerm.errors import ConfigError, PathNotFoundError
from gazerm.model.config import ModelConfig
from gazerm.storage import Storage
from gazerm.train.checkpoints import complete_checkpoints, to_delete
from gazerm.train.config import DataConfig, OptimConfig, RunConfig, TrackingConfig, TrainJobConfig
from gazerm.train.job import run_training
from gazerm.train.local_launch import LocalLauncher, job_launcher


@pytest.mark.parametrize(
    ("scores", "keep", "deleted"),
    [
        ([None, None, None, None], 2, [0, 1]),  # run.select: last keeps the newest
        ([None], 2, []),
        ([0, -1, 1, -1], 2, [1]),  # the 2 best (ranks 1, 0) and the newest, which scores -1
        ([0, 1, 2], 1, [0, 1]),
        ([0, -1, -1], 1, [1]),  # equal scores: the later is better, and the newest stays anyway
        ([-1, -1, 0, -1], 2, [0, 1]),
    ],
)
def test_checkpoints_are_deleted_as_ray_train_would(scores, keep, deleted):
    assert to_delete(scores, keep) == deleted


@pytest.fixture(autouse=True)
def _own_temp_dir(tmp_path: Path, monkeypatch) -> None:
    """The launchers' working folders of each test in a folder of its own, where it can count them."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))


def _job(tmp_path: Path, dataset_dir: str, **run) -> TrainJobConfig:
    return TrainJobConfig(
        name="test-local",
        output_dir=str(tmp_path / "run"),
        data=DataConfig(dataset_dir=dataset_dir, prepare=None, max_length=64),
        model=ModelConfig(),
        optim=OptimConfig(lr=5e-3, warmup_ratio=0.0),
        run=RunConfig(
            **{"launcher": "local", "num_workers": 2, "micro_batch_size": 8, "eval_every": 2, **run}
        ),
        tracking=TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
    )


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
@pytest.mark.usefixtures("tracking_uri")
def test_a_local_run_keeps_its_checkpoints_as_ray_would_and_resumes_from_them(
    tmp_path: Path, dataset_dir: str, capfd, monkeypatch
):
    """The resumed run is ``gazerm train``'s, whose launcher's agent starts before the job's modules are
    imported (the job module must not start one of its own). The launcher's working folders are gone
    after each run."""
    first = run_training(_job(tmp_path, dataset_dir, max_steps=6, keep_checkpoints=2))
    assert not list(Path(tempfile.gettempdir()).glob("gazerm-local-*"))

    kept = complete_checkpoints(Storage.of(tmp_path / "run"))
    assert sorted(kept) == [4, 6]  # of steps 2, 4, 6: the newest 2, each with every rank's part
    assert len(list((tmp_path / "run" / "ray").iterdir())) == 2
    assert (tmp_path / "run" / "model" / "heads.safetensors").is_file()
    client = MlflowClient(first.tracking_uri)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert "startup/ray_s" not in run.data.metrics and "startup/workers_s" in run.data.metrics  # no Ray
    assert _steps(client, first.run_id, "val/accuracy") == [2, 4, 6]
    assert 0.0 <= first.metrics["val/accuracy"] <= 1.0
    console = capfd.readouterr().out
    assert "first step after" in console and "[gazerm] eval at step 6" in console

    config = tmp_path / "job.yaml"
    resumed = _job(tmp_path, dataset_dir, max_steps=8, keep_checkpoints=2)
    config.write_text(yaml.safe_dump(resumed.model_dump(mode="json")))
    monkeypatch.setattr(job_module, "job_launcher", None)  # calling it would raise

    second = CliRunner().invoke(app, ["train", str(config)])

    assert second.exit_code == 0, second.output
    assert not list(Path(tempfile.gettempdir()).glob("gazerm-local-*"))
    assert "resuming from " in second.output and "[gazerm] eval at step 8" in second.output
    assert "final val metrics" in second.output
    assert [run.info.run_id for run in client.search_runs([run.info.experiment_id])] == [first.run_id]
    assert _steps(client, first.run_id, "train/loss") == list(range(1, 9))  # nothing trained twice
    losses = [
        m.value for m in sorted(client.get_metric_history(first.run_id, "train/loss"), key=lambda m: m.step)
    ]
    assert statistics.mean(losses[-3:]) < losses[0]
    assert sorted(complete_checkpoints(Storage.of(tmp_path / "run"))) == [6, 8]


def _signal_a_rank_after_the_first_checkpoint(job: TrainJobConfig, sent: int) -> dict:
    """Run ``job`` in a thread and send one of its ranks the signal ``sent`` once a checkpoint is complete;
    what the run returned (``result``) or raised (``error``)."""
    outcome: dict = {}

    def train() -> None:
        try:
            outcome["result"] = run_training(job)
        except Exception as error:  # the test asserts on it
            outcome["error"] = error

    training = threading.Thread(target=train)
    training.start()
    deadline = time.monotonic() + 300
    while not complete_checkpoints(Storage.of(job.output_dir)):
        assert time.monotonic() < deadline and training.is_alive(), f"no checkpoint written: {outcome}"
        time.sleep(0.2)
    (launcher,) = [p for p in psutil.Process().children() if "spawn_main" in " ".join(p.cmdline())]
    ranks = [p for p in launcher.children() if "spawn_main" in " ".join(p.cmdline())]
    assert len(ranks) == 2, [p.cmdline() for p in ranks]
    ranks[1].send_signal(sent)
    training.join(timeout=300)
    assert not training.is_alive()
    return outcome


@pytest.mark.slow
@pytest.mark.usefixtures("tracking_uri")
def test_a_local_run_that_loses_a_rank_restarts_from_its_latest_checkpoint(tmp_path: Path, dataset_dir: str):
    """A rank killed after the first checkpoint: the launcher restarts both ranks, which continue from it;
    MLflow holds every step once and counts the recovery."""
    job = _job(tmp_path, dataset_dir, max_steps=8, eval_every=2, max_failures=1)

    result = _signal_a_rank_after_the_first_checkpoint(job, signal.SIGKILL)["result"]

    client = MlflowClient(result.tracking_uri)
    assert _steps(client, result.run_id, "train/loss") == list(range(1, 9))
    assert client.get_run(result.run_id).data.metrics["recoveries"] == 1
    assert (tmp_path / "run" / "model" / "heads.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.usefixtures("tracking_uri")
@pytest.mark.parametrize(
    ("sent", "raised", "message"),
    [
        (signal.SIGKILL, ConfigError, "ran out of memory"),  # the kernel's OOM killer sends SIGKILL
        (signal.SIGSEGV, RuntimeError, r"(?s)exitcode\s*: -11.*the ranks' output: .*gazerm-local-.*logs"),
    ],
)
def test_a_rank_lost_with_no_restarts_left_ends_the_run_saying_how(
    tmp_path: Path, dataset_dir: str, sent: int, raised: type, message: str
):
    """With no restarts left, a rank killed (as the OOM killer does) ends the run with the memory policy's
    line; one that crashed, with the launcher's account of it and where the ranks' output is."""
    job = _job(tmp_path, dataset_dir, max_steps=8, eval_every=2, max_failures=0)

    error = _signal_a_rank_after_the_first_checkpoint(job, sent)["error"]

    assert type(error) is raised
    assert re.search(message, str(error)), str(error)
    logs = re.search(r"the ranks' output: (\S+)", str(error))
    assert logs is None or Path(logs.group(1)).is_dir()  # kept where the message sends the reader
    assert logs or not list(Path(tempfile.gettempdir()).glob("gazerm-local-*")), "the rest are removed"


@pytest.mark.slow
@pytest.mark.usefixtures("tracking_uri")
def test_a_ranks_mistake_ends_the_local_run_at_once_as_its_own_error(tmp_path: Path, dataset_dir: str):
    """The tiny tokenizer has no chat template: every rank raises the same ConfigError, which the driver
    raises as is (the CLI's one line), without the launcher's restarts training again."""
    job = _job(tmp_path, dataset_dir, max_steps=4, max_failures=3)
    job = job.model_copy(update={"data": job.data.model_copy(update={"template": "chat"})})
    started = time.monotonic()
    with pytest.raises(ConfigError, match="chat template"):
        run_training(job)
    assert time.monotonic() - started < 120
    assert not (tmp_path / "run" / "ray").exists()


def test_only_a_local_job_that_trains_a_backbone_gets_a_launcher_of_its_own(tmp_path: Path):
    assert isinstance(job_launcher(_job(tmp_path, "data")), LocalLauncher)
    assert not list(Path(tempfile.gettempdir()).glob("gazerm-local-*"))  # nothing made until entered
    assert job_launcher(_job(tmp_path, "data", launcher="ray")) is None
    frozen = _job(tmp_path, "data").model_copy(update={"model": ModelConfig(frozen=True, lora=None)})
    assert job_launcher(frozen) is None  # trained in the driver


def test_a_search_cannot_run_its_trials_under_the_local_launcher(tmp_path: Path, dataset_dir: str):
    with pytest.raises(ConfigError, match=r"run\.launcher: local"):
        run_training(_job(tmp_path, dataset_dir, max_steps=2), callbacks=[object()])


def test_a_job_that_fails_before_its_launch_stops_the_launchers_agent_at_once(tmp_path: Path):
    """The agent starts with the job, to import while the driver sets up; a job refused before its launch
    (here: no dataset) ends it then and there, not after its imports."""
    job = _job(tmp_path, str(tmp_path / "no-such-dataset"), max_steps=2)
    started = time.monotonic()
    with pytest.raises(PathNotFoundError, match="no-such-dataset"):
        run_training(job)
    assert time.monotonic() - started < 5  # its imports alone take longer
    assert not [p for p in multiprocessing.active_children() if p.name == "gazerm-launcher"]
