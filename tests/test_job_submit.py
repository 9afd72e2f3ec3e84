"""End-to-end: `ray job submit` a small training job to a local multi-node Ray cluster.

The test starts its own cluster with cluster/start-local-cluster.sh (a head and one worker node,
on free ports, token authentication), submits `python -m gazerm train` from this checkout the way
jobs/README.md documents it, and checks what the job left on the shared path: the exported model
and a finished MLflow run. The cluster is stopped and its state removed whatever happens.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import ROOT, LocalCluster, start_local_cluster

pytestmark = pytest.mark.slow


@pytest.fixture
def local_cluster() -> Iterator[LocalCluster]:
    with start_local_cluster(workers=1, worker_cpus=3, head_cpus=1) as cluster:
        yield cluster


def test_training_job_submitted_to_a_local_cluster_succeeds(local_cluster: LocalCluster, tmp_path: Path):
    address, env = local_cluster.address, local_cluster.env
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
