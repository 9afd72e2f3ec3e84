"""End-to-end: `ray job submit` a small training job to a local multi-node Ray cluster.

The test starts its own cluster with cluster/start-local-cluster.sh (a head and one worker node,
on free ports, token authentication), submits `python -m gazerm train` from this checkout the way
jobs/README.md documents it, and checks what the job left on the shared path: the exported model
and a finished MLflow run. The cluster is stopped and its state removed whatever happens.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def local_cluster() -> Iterator[tuple[str, dict[str, str]]]:
    """(dashboard address, environment for Ray clients) of a freshly started 2-node cluster."""
    # Ray's Unix sockets live under the state dir, and their paths must stay under 107 bytes:
    # pytest's tmp_path is too deep, a short /tmp directory is not.
    state_dir = tempfile.mkdtemp(prefix="gzc-", dir="/tmp")
    dashboard_port = _free_port()
    env = {
        **os.environ,
        "GAZERM_CLUSTER_DIR": state_dir,
        "GAZERM_CLUSTER_GCS_PORT": str(_free_port()),
        "GAZERM_CLUSTER_DASHBOARD_PORT": str(dashboard_port),
        "GAZERM_CLUSTER_PORT_BASE": "43000",
        "RAY_AUTH_MODE": "token",
    }
    start = [str(ROOT / "cluster" / "start-local-cluster.sh"), "-n", "1", "-c", "3", "-H", "1"]
    try:
        started = subprocess.run(start, env=env, capture_output=True, text=True, timeout=400, check=False)
        assert started.returncode == 0, started.stdout + started.stderr
        yield f"http://127.0.0.1:{dashboard_port}", env
    finally:
        stop = [str(ROOT / "cluster" / "stop-local-cluster.sh"), "-t", "10", "-k"]
        subprocess.run(stop, env=env, capture_output=True, timeout=120, check=False)
        shutil.rmtree(state_dir, ignore_errors=True)


def test_training_job_submitted_to_a_local_cluster_succeeds(local_cluster, tmp_path: Path):
    address, env = local_cluster
    output_dir = tmp_path / "run"
    submit = [
        "ray", "job", "submit", "--address", address,
        "--working-dir", ".", "--runtime-env", "jobs/runtime_env.yaml",
        "--", "python", "-m", "gazerm", "train",
        "--set", "data.synthetic_rows=200",
        "--set", f"data.prepare.output_dir={tmp_path / 'data'}",
        "--set", "run.max_steps=4",
        "--set", "run.eval_every=4",
        "--set", f"output_dir={output_dir}",
    ]  # fmt: skip
    job = subprocess.run(submit, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)

    log = job.stdout + job.stderr
    assert job.returncode == 0, log[-6000:]
    assert "succeeded" in log
    assert "[gazerm] eval at step 4" in log  # rank 0's progress, drawn by the job's driver

    model_dir = output_dir / "model"
    assert {"config.yaml", "heads.safetensors", "inputs.json"} <= {p.name for p in model_dir.iterdir()}
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("gazerm").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["output_dir"] == str(output_dir)
    assert 0.0 <= run.data.metrics["val/accuracy"] <= 1.0
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/accuracy")] == [4]
