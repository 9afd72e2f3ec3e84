"""Static checks of cluster/ (launcher config, local-cluster scripts) and jobs/runtime_env.yaml.

Fast and side-effect free: the scripts are only parsed (`bash -n`) or run on paths that exit
before any node starts; the launcher config is validated against the schema Ray's own `ray up`
uses (ray/autoscaler/ray-schema.json from the installed Ray, no download).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
SCRIPTS = [CLUSTER / "start-local-cluster.sh", CLUSTER / "stop-local-cluster.sh"]


def run_script(script: Path, *args: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GAZERM_CLUSTER_DIR": str(state_dir)}
    return subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, env=env, timeout=30, check=False
    )


@pytest.mark.parametrize("script", SCRIPTS, ids=[script.name for script in SCRIPTS])
def test_script_parses_and_is_strict(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    assert os.access(script, os.X_OK), f"{script} is not executable"
    assert "set -euo pipefail" in script.read_text()


@pytest.mark.parametrize("script", SCRIPTS, ids=[script.name for script in SCRIPTS])
def test_script_help(script: Path, tmp_path: Path) -> None:
    result = run_script(script, "-h", state_dir=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("Usage:")


@pytest.mark.parametrize("args", [["-n", "two"], ["-c", "-1"], ["extra"]])
def test_start_rejects_bad_arguments(args: list[str], tmp_path: Path) -> None:
    result = run_script(SCRIPTS[0], *args, state_dir=tmp_path)
    assert result.returncode == 2
    assert not (tmp_path / "pids").exists()


def test_start_refuses_a_second_cluster(tmp_path: Path) -> None:
    (tmp_path / "pids").write_text("")
    result = run_script(SCRIPTS[0], state_dir=tmp_path)
    assert result.returncode == 1
    assert "stop-local-cluster.sh first" in result.stderr


def test_stop_without_a_cluster_is_a_no_op(tmp_path: Path) -> None:
    result = run_script(SCRIPTS[1], state_dir=tmp_path / "absent")
    assert result.returncode == 0
    assert "nothing to stop" in result.stdout


def test_scripts_never_stop_other_ray_instances() -> None:
    """`ray stop` kills every Ray process of the user; the scripts signal their own process groups."""
    for script in SCRIPTS:
        commands = [line for line in script.read_text().splitlines() if not line.lstrip().startswith("#")]
        assert not [line for line in commands if "ray stop" in line], script


def launcher_schema() -> dict[str, Any]:
    spec = importlib.util.find_spec("ray")
    assert spec and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "autoscaler" / "ray-schema.json"
    return json.loads(path.read_text())


def test_gpu_cluster_config() -> None:
    config = yaml.safe_load((CLUSTER / "gpu-cluster.yaml").read_text())
    errors = Draft7Validator(launcher_schema()).iter_errors(config)
    assert [f"{list(error.absolute_path)}: {error.message}" for error in errors] == []
    required = (
        "cluster_name",
        "provider",
        "auth",
        "available_node_types",
        "head_node_type",
        "setup_commands",
    )
    for key in required:
        assert key in config, key
    node_types = config["available_node_types"]
    assert config["head_node_type"] in node_types
    workers = {name: node for name, node in node_types.items() if name != config["head_node_type"]}
    assert workers, "no worker node type"
    assert sum(node.get("min_workers", 0) for node in workers.values()) <= config["max_workers"]
    for node in workers.values():
        assert node.get("min_workers", 0) <= node["max_workers"] <= config["max_workers"]
        assert node["node_config"]["InstanceType"].startswith(("p4", "p5")), "not an 8-GPU instance"
    # The synced checkout is installed with the CUDA torch on every node.
    assert "." in config["file_mounts"].values()
    setup = "\n".join(config["setup_commands"])
    assert "download.pytorch.org/whl/cu" in setup
    assert "pip install -q -e ~/gazerm" in setup
    assert "ray[default]==" in setup


def test_runtime_env_is_a_valid_ray_runtime_env() -> None:
    from ray.runtime_env import RuntimeEnv

    runtime_env = yaml.safe_load((ROOT / "jobs" / "runtime_env.yaml").read_text())
    RuntimeEnv(**runtime_env)  # raises on unknown or malformed fields; does not start Ray
    assert all(isinstance(value, str) for value in runtime_env["env_vars"].values())
    assert {".git/", "/runs/"} <= set(runtime_env["excludes"])
