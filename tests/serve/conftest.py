"""A tiny saved reward model and its scorer, shared by the API tests and the Serve end-to-end test."""

from __future__ import annotations

import pytest

from gazerm.score import RewardScorer
from tests.conftest import save_random_model

TOKEN = "test-token-0123456789abcdef-0123456789"  # at least 32 characters
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return save_random_model(tmp_path_factory.mktemp("serve") / "model", max_length=64)


@pytest.fixture(scope="session")
def scorer(model_dir) -> RewardScorer:
    return RewardScorer(model_dir)
