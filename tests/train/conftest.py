"""Fixtures of the training tests."""

from __future__ import annotations

import pytest

from gazerm.data.prepare import GazeSpec, PrepareConfig, SourceSpec, prepare
from gazerm.data.synthetic import write_readability_preferences


@pytest.fixture(scope="session")
def train_paths(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A prepared train split of several shards (so several blocks), without Ray."""
    root = tmp_path_factory.mktemp("order")
    source = write_readability_preferences(root / "pairs.jsonl", n=90, seed=5)
    config = PrepareConfig(
        sources=[SourceSpec(format="generic", path=str(source))],
        output_dir=str(root / "shards"),
        rows_per_shard=15,
        splits={"train": 1.0, "validation": 0.0, "test": 0.0},
        gaze=GazeSpec(predictor="reading_model", backend="local"),
    )
    manifest = prepare(config)
    return manifest.shard_paths(config.output_dir, "train")
