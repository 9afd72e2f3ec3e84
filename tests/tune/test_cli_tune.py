"""``gazerm tune`` wiring: arguments, config + space loading, what it prints (the search is faked)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from typer.testing import CliRunner

from gazerm.cli import app
from gazerm.table import Table
from gazerm.tune import search
from gazerm.tune.results import TrialRecord

TINY = Path(__file__).resolve().parents[2] / "tune_spaces" / "tiny.yaml"


def test_tune_command_runs_the_search_and_prints_tables_and_the_registered_version(monkeypatch):
    calls = {}

    def fake_search(config, space, fresh):
        calls.update(config=config, space=space, fresh=fresh)
        best = TrialRecord("run-1", "quickstart-tiny-a_00001", "FINISHED", {}, {"val/accuracy": 0.9})
        return search.SearchOutcome(
            "quickstart-tiny",
            "runs/quickstart-tiny",
            "sqlite:///runs/mlflow.db",
            "parent-1",
            [best],
            best,
            SimpleNamespace(name="quickstart-tiny", version=3, aliases=["best"]),
            Table(["run", "val/accuracy"], [[best.name, 0.9]]),
            Table(["features", "best val/accuracy"], [["FFD+TRT", 0.9]]),
        )

    monkeypatch.setattr(search, "run_search", fake_search)
    result = CliRunner().invoke(
        app,
        ["tune", "--space", str(TINY), "--set", "run.seed=7", "--tracking-uri", "sqlite:///x.db", "--fresh"],
    )

    assert result.exit_code == 0, result.output
    assert calls["space"].name == "tiny" and calls["fresh"] is True
    assert (calls["config"].run.seed, calls["config"].tracking.tracking_uri) == (7, "sqlite:///x.db")
    assert "| quickstart-tiny-a_00001 | 0.9000" in result.output and "| FFD+TRT" in result.output
    assert "registered: models:/quickstart-tiny/3, alias @best" in result.output


def test_tune_command_names_the_bad_field_of_a_space(tmp_path: Path):
    space = tmp_path / "bad.yaml"
    space.write_text("name: bad\nparams:\n  optim.lrr: {type: choice, values: [1]}\n")

    result = CliRunner().invoke(app, ["tune", "--space", str(space)])

    assert result.exit_code == 2
    assert "'optim.lrr' is not a field of the training job config" in result.output


def test_a_search_over_a_frozen_backbone_job_is_refused_before_ray_starts(tmp_path: Path):
    import pytest

    from gazerm.errors import ConfigError
    from gazerm.model.config import ModelConfig
    from gazerm.train.config import TrainJobConfig
    from gazerm.tune.search import run_search
    from gazerm.tune.space import SearchSpace

    job = TrainJobConfig(output_dir=str(tmp_path / "job"), model=ModelConfig(frozen=True, lora=None))
    space = SearchSpace(name="s", feature_subsets=[[1, 1, 1, 1, 1]])
    with pytest.raises(ConfigError, match="rows of gazerm reproduce"):
        run_search(job, space)


def test_a_search_with_a_value_that_does_not_fit_this_machine_is_refused_before_ray_starts(
    tmp_path: Path, monkeypatch
):
    import pytest

    from gazerm.errors import ConfigError
    from gazerm.train.config import RunConfig, TrainJobConfig
    from gazerm.tune.search import run_search
    from gazerm.tune.space import SearchSpace

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    job = TrainJobConfig(output_dir=str(tmp_path / "job"), run=RunConfig(micro_batch_size=8))
    too_big = {"run.micro_batch_size": {"type": "choice", "values": [8, 20000]}}
    space = SearchSpace(name="s", params=too_big, feature_subsets=[[1, 1, 1, 1, 1]])
    with pytest.raises(ConfigError, match=r"tries run.micro_batch_size=20000, but memory: does not fit"):
        run_search(job, space)
    assert not (tmp_path / "quickstart-s").exists()  # refused before anything ran
