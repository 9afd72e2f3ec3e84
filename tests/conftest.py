"""Shared test fixtures. Ray starts once per test session: start-up costs tens of seconds on 2 cores."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray with room for 2 training workers plus Ray Data tasks (see gazerm.runtime.init_ray)."""
    import ray

    from gazerm.runtime import init_ray

    init_ray(reserved_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory, ray_local) -> str:
    """Prepared shards of a small synthetic readability set (240 pairs), shared by the e2e tests."""
    from gazerm.data.prepare import GazeSpec, PrepareConfig, SourceSpec, prepare
    from gazerm.data.synthetic import write_readability_preferences

    root = tmp_path_factory.mktemp("data")
    source = write_readability_preferences(root / "pairs.jsonl", n=240, seed=3)
    config = PrepareConfig(
        sources=[SourceSpec(format="generic", path=str(source))],
        output_dir=str(root / "shards"),
        rows_per_shard=100,
        splits={"train": 0.8, "validation": 0.2, "test": 0.0},
        gaze=GazeSpec(predictor="reading_model", backend="local"),
    )
    prepare(config)
    return config.output_dir


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer (BPE with a chat template), read from its GGUF file."""
    from gazerm.model.config import ModelConfig
    from gazerm.model.reward_model import build_tokenizer
    from tests.helpers import SMOLLM2, require_smollm2

    require_smollm2()
    return build_tokenizer(ModelConfig(backbone=SMOLLM2))


def save_random_model(directory, predictor: str = "reading_model", max_length: int = 128, **overrides):
    """A saved reward model (random weights nudged off init, like a trained one) with its inputs.json:
    for tests of what consumes a model directory (scoring, re-ranking, reports) without training one."""
    import json
    from pathlib import Path

    from gazerm.model.io import INPUTS_FILE, save_reward_model
    from gazerm.model.reward_model import build_tokenizer
    from tests.model.conftest import tiny_config
    from tests.model.test_io import trained_looking

    config = tiny_config(**overrides)
    tokenizer = build_tokenizer(config)
    saved = save_reward_model(trained_looking(config, tokenizer), tokenizer, config, Path(directory))
    inputs = {"gaze": {"predictor": predictor}, "max_length": max_length}
    (saved / INPUTS_FILE).write_text(json.dumps(inputs))
    return saved
