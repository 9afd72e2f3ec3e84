"""The machine's cache of model architectures: built once, read back by later drivers without transformers,
and never read for another backbone config or a torn file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gazerm.config import load_config
from gazerm.model.config import ModelConfig
from gazerm.train import architecture as arch
from gazerm.train.config import TrainJobConfig
from gazerm.train.memory import preflight

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GAZERM_CACHE_DIR", str(tmp_path / "cache"))
    arch._architecture.cache_clear()  # the process's own cache would hide the machine's
    yield tmp_path / "cache" / arch.ARCHITECTURE_CACHE
    arch._architecture.cache_clear()


def test_an_architecture_is_built_once_and_then_read_from_the_cache(cache: Path, monkeypatch):
    config = ModelConfig(fusion="concat")
    built = arch.architecture(config, lm_head=False)
    assert len(list(cache.glob("*.json"))) == 1

    arch._architecture.cache_clear()
    monkeypatch.setattr(arch, "_built_architecture", lambda *_: pytest.fail("built again"))
    assert arch.architecture(config, lm_head=False) == built
    assert built.linears and built.backbone_params > 0


def test_a_torn_cache_file_is_built_again_and_replaced(cache: Path):
    config = ModelConfig()
    built = arch.architecture(config, lm_head=True)
    (cached,) = cache.glob("*.json")
    cached.write_text(cached.read_text()[:40])

    arch._architecture.cache_clear()
    assert arch.architecture(config, lm_head=True) == built
    assert arch.Architecture.from_json(cached.read_text()) == built


def test_the_key_follows_the_model_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    code = tmp_path / "heads.py"
    code.write_text("HEADS = 1\n")
    monkeypatch.setattr(arch, "_MODEL_CODE", [code])
    config = ModelConfig().model_dump_json()
    arch._installed_code.cache_clear()
    try:
        before = arch._cache_key(config, lm_head=False)
        code.write_text("HEADS = 2\n")
        arch._installed_code.cache_clear()  # a new process: the code is read again
        assert arch._cache_key(config, lm_head=False) != before
    finally:  # later tests digest the real model code, not this file's, even when this one fails
        arch._installed_code.cache_clear()


def test_the_key_follows_the_backbones_config_and_skips_a_hub_backbone(tmp_path: Path):
    backbone = tmp_path / "backbone"
    backbone.mkdir()
    (backbone / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    local = ModelConfig(backbone=str(backbone)).model_dump_json()
    first = arch._cache_key(local, lm_head=False)
    assert first == arch._cache_key(local, lm_head=False) and first != arch._cache_key(local, lm_head=True)

    (backbone / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 128}))
    assert arch._cache_key(local, lm_head=False) != first
    hub = ModelConfig(backbone="HuggingFaceTB/SmolLM2-135M-Instruct").model_dump_json()
    assert arch._cache_key(hub, lm_head=False) is None


def test_a_driver_with_a_cached_architecture_checks_memory_without_transformers(cache: Path):
    config = load_config(TrainJobConfig, ROOT / "jobs" / "quickstart.yaml")
    expected = preflight(config, local=True)  # fills the machine's cache
    code = (
        "import sys; from gazerm.config import load_config; from gazerm.train.config import TrainJobConfig; "
        "from gazerm.train.memory import preflight; "
        "check = preflight(load_config(TrainJobConfig, 'jobs/quickstart.yaml'), local=True); "
        "print(check.refusal, check.warning, sorted({'transformers', 'peft'} & set(sys.modules)))"
    )
    env = {**os.environ, "GAZERM_CACHE_DIR": str(cache.parent)}
    checked = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.split() == [str(expected.refusal), str(expected.warning), "[]"]
