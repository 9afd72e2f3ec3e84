"""Static checks of cluster/ (launcher config, local-cluster scripts) and jobs/runtime_env.yaml.

Fast and side-effect free: the scripts are only parsed (`bash -n`) or run on paths that exit
before any node starts; the launcher config is validated against the schema Ray's own `ray up`
uses (ray/autoscaler/ray-schema.json from the installed Ray, no download).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
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
    assert "pip install -q -c ~/gazerm/constraints.txt -e ~/gazerm" in setup  # the pinned versions
    assert "ray[default]==" in setup


def test_runtime_env_is_a_valid_ray_runtime_env() -> None:
    from ray.runtime_env import RuntimeEnv

    runtime_env = yaml.safe_load((ROOT / "jobs" / "runtime_env.yaml").read_text())
    RuntimeEnv(**runtime_env)  # raises on unknown or malformed fields; does not start Ray
    assert all(isinstance(value, str) for value in runtime_env["env_vars"].values())
    assert {".git/", "/runs/"} <= set(runtime_env["excludes"])


def test_gpu_cluster_runs_ray_with_token_authentication() -> None:
    """Every `ray start` of the launcher config runs with RAY_AUTH_MODE=token, the token file reaches
    every node (file_mounts) and is made 0600 there; the dashboard stays on the loopback address."""
    config = yaml.safe_load((CLUSTER / "gpu-cluster.yaml").read_text())
    starts = [*config["head_start_ray_commands"], *config["worker_start_ray_commands"]]
    ray_starts = [command for command in starts if "ray start" in command]
    assert len(ray_starts) == 2
    for command in ray_starts:
        assert "RAY_AUTH_MODE=token ray start" in command, command
    assert "--dashboard-host=127.0.0.1" in ray_starts[0]
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    setup = config["setup_commands"]
    assert "chmod 600 ~/.ray/auth_token" in setup[0]  # before anything else runs on the node
    assert any("export RAY_AUTH_MODE=token" in command for command in setup)


def fake_ray(tmp_path: Path) -> tuple[Path, Path]:
    """A `ray` executable that records each call (with RAY_AUTH_MODE) and whose `ray start` fails at
    once, so the start script stops before any node runs: (bin dir for PATH, the call log)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "ray-calls.log"
    bin_dir.mkdir()
    script = bin_dir / "ray"
    script.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "${{RAY_AUTH_MODE:-unset}} $*" >> "{log}"\n'
        'if [[ $1 == get-auth-token ]]; then mkdir -p "$HOME/.ray"; '
        '[[ -s $HOME/.ray/auth_token ]] || printf token > "$HOME/.ray/auth_token"; fi\n'
        "if [[ $1 == start ]]; then exit 1; fi\n"
    )
    script.chmod(0o755)
    return bin_dir, log


def run_start_with_fake_ray(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    from gazerm.runtime import free_port

    bin_dir, log = fake_ray(tmp_path)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "GAZERM_CLUSTER"))},
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(home),
        "GAZERM_CLUSTER_GCS_PORT": str(free_port()),
        "GAZERM_CLUSTER_DASHBOARD_PORT": str(free_port()),
        **env,
    }
    result = subprocess.run(
        ["bash", str(SCRIPTS[0]), "-n", "0"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
    return result, log


def test_start_makes_a_private_state_dir_and_a_0600_token(tmp_path: Path) -> None:
    """Without GAZERM_CLUSTER_DIR the state dir is a new mktemp -d one (0700, not a fixed /tmp path);
    a token file another umask left world-readable is made 0600; every `ray` call has token auth."""
    token = tmp_path / "home" / ".ray" / "auth_token"
    token.parent.mkdir(parents=True)
    token.write_text("token")
    token.chmod(0o644)
    result, log = run_start_with_fake_ray(tmp_path)
    calls = log.read_text().splitlines()
    start = next(call for call in calls if call.split()[1] == "start")
    state_dir = Path(start.split("--temp-dir ")[1].split()[0]).parents[1]
    try:
        assert result.returncode == 1 and "the head node exited" in result.stderr, result.stderr
        assert state_dir.name.startswith("gazerm-rc.") and state_dir.parent == Path("/tmp")
        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((state_dir / "logs" / "head.log").stat().st_mode) == 0o600
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        assert all(call.startswith("token ") for call in calls), calls
        assert not (tmp_path / "home" / ".ray" / "gazerm-local-cluster").exists()  # the stop script's
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def test_start_refuses_a_state_dir_that_is_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    result, log = run_start_with_fake_ray(tmp_path, GAZERM_CLUSTER_DIR=str(tmp_path / "link"))
    assert result.returncode == 1 and "symlink or not owned by you" in result.stderr
    assert not log.exists() and not (target / "pids").exists()


def test_start_script_text_has_no_fixed_tmp_state_dir() -> None:
    text = SCRIPTS[0].read_text()
    assert "umask 077" in text and "mktemp -d" in text
    assert "/tmp/gazerm-local-cluster" not in text
    assert "/tmp/gazerm-local-cluster" not in SCRIPTS[1].read_text()


def test_local_ray_uses_token_auth_with_a_private_token(tmp_path: Path, monkeypatch) -> None:
    """gazerm's own local Ray: Ray's default mode (token, from 2.60) left to Ray, the token file created
    0600 (or tightened to 0600) before Ray would create it, and a mode the user chose is kept."""
    import ray

    from gazerm import runtime

    monkeypatch.setenv("HOME", str(tmp_path))
    for name in (runtime.AUTH_MODE_ENV, runtime.AUTH_TOKEN_ENV, runtime.AUTH_TOKEN_PATH_ENV):
        monkeypatch.setenv(name, "")  # recorded, so what enable_token_auth sets is undone after the test
        monkeypatch.delenv(name)
    seen = {}
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.update(mode=os.environ.get(runtime.AUTH_MODE_ENV)))
    runtime._start_local(1, {})
    token = tmp_path / ".ray" / "auth_token"
    assert seen == {"mode": None}  # set after Ray's import, it would not reach this process's client
    assert len(token.read_text()) == 64 and stat.S_IMODE(token.stat().st_mode) == 0o600
    token.chmod(0o644)
    runtime.enable_token_auth()
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    monkeypatch.setenv(runtime.AUTH_MODE_ENV, "disabled")
    token.unlink()
    runtime.enable_token_auth()
    assert os.environ[runtime.AUTH_MODE_ENV] == "disabled" and not token.exists()


@pytest.mark.parametrize("asked", [False, True])
def test_a_local_ray_starts_its_dashboard_only_when_asked(tmp_path: Path, monkeypatch, asked: bool) -> None:
    """A local job needs neither the dashboard (a dozen processes starting beside the training workers)
    nor Ray Train's preemption watcher; GAZERM_RAY_DASHBOARD=1 brings the dashboard back."""
    import ray

    from gazerm import runtime

    monkeypatch.setenv("HOME", str(tmp_path))  # the token file goes there
    monkeypatch.setenv(runtime.PREEMPTION_WATCHER_ENV, "")  # recorded, so the test's value is undone after
    monkeypatch.delenv(runtime.PREEMPTION_WATCHER_ENV)
    monkeypatch.setenv(runtime.DASHBOARD_ENV, "1" if asked else "0")
    seen = {}
    watcher = runtime.PREEMPTION_WATCHER_ENV
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.update(kwargs, watcher=os.environ.get(watcher)))
    runtime._start_local(1, {})
    assert seen["include_dashboard"] is asked and seen["watcher"] == "0"


def test_ray_floor_has_token_authentication() -> None:
    import tomllib
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (ray_requirement,) = [Requirement(r) for r in project["project"]["dependencies"] if r.startswith("ray")]
    # 2.60 turns token authentication on for a new local ray.init() (gazerm.runtime relies on it)
    assert not ray_requirement.specifier.contains("2.59.0") and ray_requirement.specifier.contains("2.60.0")
