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
