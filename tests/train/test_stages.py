"""Staged job configs (validation, the per-stage jobs they make) and the report of a staged run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gazerm.config import load_config
from gazerm.errors import ConfigError
from gazerm.evaluate.offline import evaluate_split
from gazerm.train.stages import StageAccuracy, StagedJobConfig, StagedOutcome, run_stages
from tests.conftest import save_random_model

JOBS = Path(__file__).resolve().parents[2] / "jobs"


def _staged(tmp_path: Path, *stages: dict, **extra) -> dict:
    return {"base": {"output_dir": str(tmp_path / "staged")}, "stages": list(stages), **extra}


def _stage(name: str, **fields) -> dict:
    return {"name": name, "dataset_dir": f"data/{name}", **fields}


def test_shipped_dsp_job_chains_general_then_academy():
    config = load_config(StagedJobConfig, JOBS / "dsp_staged_academy.yaml")
    general, academy = config.jobs()
    root = Path("runs/dsp-staged-academy").resolve()
    assert (general.name, academy.name) == ("dsp-staged-academy-general", "dsp-staged-academy-academy")
    assert (general.output_dir, academy.output_dir) == (str(root / "general"), str(root / "academy"))
    assert general.model.init_from is None and academy.model.init_from == str(root / "general" / "model")
    assert (general.optim.lr, academy.optim.lr) == (1e-3, 2e-4)
    assert general.loss.lm_loss_coeff == academy.loss.lm_loss_coeff == 0.1
    assert general.model.pooling == academy.model.pooling == "last"
    assert academy.data.prepare.sources[0].options == {"domain": "academy"}
    assert academy.data.max_length == 256  # base data settings stay; only the sources are the stage's
    assert [(e.name, config.eval_dataset(e)) for e in config.eval_sets] == [
        ("general", "runs/data/dsp-helpful"),
        ("academy", "runs/data/dsp-academy"),
    ]


def test_stage_overrides_apply_to_that_stage_only(tmp_path):
    overrides = {"run.max_steps": 5, "model.pooling": "mean", "loss.lm_loss_coeff": 0.0}
    config = StagedJobConfig.model_validate(_staged(tmp_path, _stage("a"), _stage("b", overrides=overrides)))
    first, second = config.jobs(tracking_uri="sqlite:///x.db")
    assert (first.run.max_steps, first.model.pooling) == (None, None)
    assert (second.run.max_steps, second.model.pooling) == (5, "mean")
    assert first.data.dataset_dir == "data/a" and first.data.prepare is None
    assert first.tracking.tracking_uri == second.tracking.tracking_uri == "sqlite:///x.db"


@pytest.mark.parametrize(
    ("stages", "extra", "message"),
    [
        ([_stage("a"), _stage("a")], {}, r"duplicate stage name\(s\) \['a'\]"),
        ([_stage("a/b")], {}, r"stages\.0\.name: String should match pattern"),
        (
            [_stage("a", overrides={"model.fusion": "add"})],
            {},
            r"unknown override key\(s\) \['model\.fusion'\]",
        ),
        ([_stage("a"), _stage("b", overrides={"optim.lr": -1})], {}, r"stage 'b': .*optim\.lr"),
        ([{"name": "a"}], {}, "stage 'a': set exactly one of dataset_dir or prepare"),
        ([_stage("a")], {"eval_sets": [{"name": "x", "stage": "nope"}]}, "names unknown stage 'nope'"),
        ([_stage("a")], {"eval_sets": [{"name": "x", "stage": "a"}] * 2}, r"duplicate eval set name"),
        ([_stage("a"), _stage("b")], {"base": {"run": {"zero_stage": 3}}}, "use run.zero_stage=2"),
        (
            [_stage("a"), _stage("b", overrides={"loss.lm_loss_coeff": 0.1})],
            {},
            "lm_loss_coeff must be > 0 in every stage or in none",
        ),
        ([], {}, r"stages: List should have at least 1 item"),
    ],
)
def test_bad_configs_are_refused_naming_the_problem(tmp_path, stages, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(StagedJobConfig, _staged(tmp_path, *stages) | extra)


def test_table_has_a_row_per_stage_and_a_column_per_eval_set():
    results = [
        StageAccuracy("general", "general", 0.75, 40),
        StageAccuracy("general", "academy", 0.5, 12),
        StageAccuracy("academy", "general", 0.7, 40),
        StageAccuracy("academy", "academy", 0.9166666, 12),
    ]
    outcome = StagedOutcome("uri", "run", {"general": "g/model", "academy": "a/model"}, results)
    table = outcome.table()
    assert table.headers == ["stage", "general", "academy"]
    assert table.rows == [
        ["general", "0.7500 (40)", "0.5000 (12)"],
        ["academy", "0.7000 (40)", "0.9167 (12)"],
    ]
    assert results[3].metric == "stage/academy/academy/accuracy"


@pytest.mark.slow  # run_stages starts a local Ray, even when every stage is done
def test_rerun_skips_trained_stages_and_reports_every_model(tmp_path, dataset_dir, capfd):
    """Both stages' models already exist (saved without training): nothing trains, both are evaluated."""
    config = StagedJobConfig.model_validate(
        _staged(
            tmp_path,
            {"name": "first", "dataset_dir": dataset_dir},
            {"name": "second", "dataset_dir": dataset_dir},
            eval_sets=[
                {"name": "val", "stage": "first"},
                {"name": "train", "stage": "second", "split": "train"},
            ],
        )
        | {"base": {"output_dir": str(tmp_path / "staged"), "name": "skip"}}
    )
    save_random_model(tmp_path / "staged" / "first" / "model")
    save_random_model(tmp_path / "staged" / "second" / "model", seed=5)

    outcome = run_stages(config)

    output = capfd.readouterr().out
    assert "stage first: skipped" in output and "stage second: skipped" in output
    expected = {
        (stage, name): evaluate_split(tmp_path / "staged" / stage / "model", dataset_dir, split)
        for stage in ("first", "second")
        for name, split in (("val", "validation"), ("train", "train"))
    }
    assert {(r.stage, r.eval_set): (r.accuracy, r.pairs) for r in outcome.results} == {
        key: (value.accuracy, value.pairs) for key, value in expected.items()
    }
    assert expected["first", "val"].pairs + expected["first", "train"].pairs == 240  # every pair, once
    client = MlflowClient(outcome.tracking_uri)
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "skip"
    assert parent.data.metrics["stage/second/val/accuracy"] == expected["second", "val"].accuracy
    artifacts = {a.path for a in client.list_artifacts(outcome.parent_run_id)}
    assert {"stages.md", "stages.json"} <= artifacts
    logged = json.loads(
        Path(client.download_artifacts(outcome.parent_run_id, "stages.json", str(tmp_path))).read_text()
    )
    assert len(logged) == 4 and logged[0] == {
        "stage": "first",
        "eval_set": "val",
        "accuracy": expected["first", "val"].accuracy,
        "pairs": expected["first", "val"].pairs,
    }
    assert outcome.table().markdown() in output


def test_cli_refuses_a_bad_staged_config_before_training(tmp_path):
    from typer.testing import CliRunner

    from gazerm.cli import app

    job = str(JOBS / "dsp_staged_academy.yaml")
    result = CliRunner().invoke(app, ["train-staged", job, "--set", "base.run.zero_stage=3"])
    assert result.exit_code == 2 and "use run.zero_stage=2" in result.output
    missing = CliRunner().invoke(app, ["train-staged", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "config file not found" in missing.output
