"""Fixtures of the training tests."""

from __future__ import annotations

import pytest

from tests.helpers import prepare_readability


@pytest.fixture(scope="session")
def train_paths(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A prepared train split of several shards (so several blocks), without Ray."""
    root = tmp_path_factory.mktemp("order")
    manifest = prepare_readability(
        root, n=90, seed=5, rows_per_shard=15, splits={"train": 1.0, "validation": 0.0, "test": 0.0}
    )
    return manifest.shard_paths(root / "shards", "train")
