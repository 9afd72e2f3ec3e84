"""Shared test fixtures. Ray starts once per test session: start-up costs tens of seconds on 2 cores."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")
# One torch thread per process (set before torch is imported): tiny models gain nothing from a second
# thread, and on a busy 2-core machine (CI, a shared workstation) intra-op threads spin-wait on each other,
# which made single tests several times slower and their timings erratic. Subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``-n 2`` (with addopts' ``--dist loadgroup``) the slow tests run one after another in one
    worker, since two Ray instances on one host interfere, and the fast ones fill the other worker."""
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.xdist_group("slow"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``-m "not slow"`` is the fast inner loop: a test that starts Ray must be marked slow."""
    if "ray_local" in item.fixturenames and item.get_closest_marker("slow") is None:
        pytest.fail(f"{item.nodeid} starts Ray (ray_local) but is not marked slow", pytrace=False)


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray with room for 2 training workers plus Ray Data tasks (see gazerm.runtime.init_ray)."""
    import ray

    from gazerm.runtime import init_ray

    init_ray(reserved_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Prepared shards of a small synthetic readability set (240 pairs), shared by the e2e tests; prepared
    without Ray, so fast tests can read it too."""
    from tests.helpers import prepare_readability

    root = tmp_path_factory.mktemp("data")
    prepare_readability(
        root, n=240, seed=3, rows_per_shard=100, splits={"train": 0.8, "validation": 0.2, "test": 0.0}
    )
    return str(root / "shards")


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
    from pathlib import Path

    from gazerm.model.inputs import InputSpec
    from gazerm.model.io import save_reward_model
    from gazerm.model.reward_model import build_tokenizer
    from tests.model.conftest import tiny_config
    from tests.model.test_io import trained_looking

    config = tiny_config(**overrides)
    tokenizer = build_tokenizer(config)
    inputs = InputSpec({"predictor": predictor}, max_length)
    return save_reward_model(trained_looking(config, tokenizer), tokenizer, config, inputs, Path(directory))


@pytest.fixture(scope="session")
def empty_mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow sqlite store with its tables created: creating them takes a second or more on 2 cores,
    copying the file a few milliseconds."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-empty") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking_uri(tmp_path: Path, empty_mlflow_store: Path) -> str:
    """The URI of a new, empty MLflow sqlite store at ``tmp_path / "mlflow.db"``."""
    shutil.copyfile(empty_mlflow_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
