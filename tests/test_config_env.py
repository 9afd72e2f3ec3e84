"""``${VAR}`` in a config file's string values comes from the environment."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from gazerm.config import expand_env, load_config
from gazerm.errors import ConfigError


class _Job(BaseModel):
    path: str
    paths: list[str] = []
    count: int = 0


def test_variables_in_strings_are_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("GAZERM_TEST_DIR", "/data/release")
    config = tmp_path / "job.yaml"
    config.write_text("path: ${GAZERM_TEST_DIR}/dataset\npaths: ['${GAZERM_TEST_DIR}', plain]\ncount: 3\n")
    job = load_config(_Job, config)
    assert (job.path, job.paths, job.count) == ("/data/release/dataset", ["/data/release", "plain"], 3)


def test_an_unset_variable_is_a_config_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.delenv("GAZERM_TEST_UNSET", raising=False)
    config = tmp_path / "job.yaml"
    config.write_text("path: ${GAZERM_TEST_UNSET}\n")
    with pytest.raises(ConfigError, match="GAZERM_TEST_UNSET is not set"):
        load_config(_Job, config)


def test_dollars_without_braces_and_keys_stay():
    assert expand_env({"$HOME": "cost $5"}) == {"$HOME": "cost $5"}
