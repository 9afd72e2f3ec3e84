"""``gazerm reproduce`` over folds: one run per (row, fold, seed), per-row numbers over folds (seeds averaged
within a fold), paired comparisons with their t-interval, and a control row that trains nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from gazerm.errors import ConfigError
from gazerm.evaluate.baselines import longer_response_accuracy
from gazerm.tune.reproduce import ReproduceConfig, Run, control_result, run_reproduction, summarize
from tests.data.util import study_rows, write_jsonl

FOLDS = 3
ROWS = [
    {"name": "text-only", "overrides": {"model.fusion": "none"}},
    {"name": "implicit", "overrides": {"model.fusion": "concat"}},
    {"name": "longer", "control": "longer_response"},
]
WORKERS = {f"w{i}": 2 + i % 3 for i in range(7)}  # 20 rows, one pair each
T_975_DF4 = 2.776445  # Student t quantile 0.975 at 4 degrees of freedom, from a printed table


def grouped_prepare(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    rows = study_rows(WORKERS)
    for i, row in enumerate(rows):  # the chosen response is the longer one in every third row
        row["chosen"] += " at length" * (i % 3 == 0)
    path = write_jsonl(tmp_path / "study.jsonl", rows)
    return {
        "sources": [{"format": "generic", "path": str(path)}],
        "output_dir": str(tmp_path / "shards"),
        "split_method": "group_kfold",
        "folds": FOLDS,
        "fold": 0,
        "splits": {"train": 0.75, "validation": 0.25},
        "gaze": {"predictor": "none"},
        **changes,
    }


def write_job(tmp_path: Path, prepare: dict[str, Any]) -> Path:
    job = {
        "name": "study",
        "output_dir": str(tmp_path / "run"),
        "data": {"prepare": prepare},
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def spec(job: Path, **fields: Any) -> ReproduceConfig:
    settings = {"name": "study", "job": str(job), "rows": ROWS, "seeds": [0, 1], "folds": FOLDS, **fields}
    return ReproduceConfig.model_validate(settings)


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    return write_job(tmp_path, grouped_prepare(tmp_path))


def test_every_row_fold_and_seed_is_a_run_in_its_own_directory(job_file, tmp_path):
    config = spec(job_file)
    runs = config.runs(config.base_job())
    assert len(runs) == len(ROWS) * FOLDS * 2
    assert [(r.row, r.fold, r.seed) for r in runs[:4]] == [
        ("text-only", 0, 0),
        ("text-only", 0, 1),
        ("text-only", 1, 0),
        ("text-only", 1, 1),
    ]
    last = runs[-1]
    assert last.job.output_dir == str(tmp_path / "run" / "reproduce" / "longer" / "fold2" / "seed1")
    assert (last.job.name, last.job.data.prepare.fold, last.control) == (
        "study-longer-fold2-seed1",
        2,
        "longer_response",
    )
    data = {(run.row, run.fold): run.job.data.prepare.output_dir for run in runs}
    assert len({data[row["name"], 1] for row in ROWS}) == 1  # one fold's data serves every row
    assert len({data["text-only", fold] for fold in range(FOLDS)}) == FOLDS


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (
            {"split_method": "hash", "folds": None, "fold": None, "splits": {"train": 1.0}},
            r"has hash, folds None",
        ),
        ({"folds": 5}, r"folds: 3 needs data.prepare with split_method: group_kfold and folds: 3"),
    ],
)
def test_a_job_that_does_not_split_by_group_into_as_many_folds_is_refused(tmp_path, prepare, message):
    config = spec(write_job(tmp_path, grouped_prepare(tmp_path, **prepare)))
    with pytest.raises(ConfigError, match=message):
        config.runs(config.base_job())


def test_a_row_that_changes_the_split_method_is_named(job_file):
    rows = [{"name": "hashed", "overrides": {"data.prepare.split_method": "hash"}}]
    config = spec(job_file, rows=rows)
    with pytest.raises(ConfigError, match=r"row 'hashed': .*only split_method=group_kfold takes"):
        config.runs(config.base_job())


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"compare": [["implicit", "nope"]]}, r"compare: unknown row\(s\) \['nope'\]"),
        ({"compare": [["implicit", "implicit"]]}, r"compared with itself"),
        ({"compare": [["implicit", "text-only"]], "folds": None}, r"compare pairs two rows fold by fold"),
        ({"metric": "test/loss"}, r"control rows give test/accuracy only"),
        ({"folds": 1}, r"folds"),
    ],
)
def test_a_bad_spec_is_refused(job_file, fields, message):
    with pytest.raises(ValueError, match=message):
        spec(job_file, **fields)


def write_results(runs: list[Run], values: dict[tuple[str, int, int], float]) -> None:
    for run in runs:
        if (run.row, run.fold, run.seed) in values:
            run.result_file.parent.mkdir(parents=True, exist_ok=True)
            run.result_file.write_text(json.dumps({"test/accuracy": values[run.row, run.fold, run.seed]}))


def test_rows_average_seeds_within_a_fold_then_folds_and_pairs_are_compared_by_fold(tmp_path):
    config = spec(
        write_job(tmp_path, grouped_prepare(tmp_path, folds=5)), folds=5, compare=[["implicit", "text-only"]]
    )
    text = [0.60, 0.62, 0.58, 0.61, 0.59]
    implicit = [0.62, 0.67, 0.61, 0.67, 0.63]  # differences 0.02, 0.05, 0.03, 0.06, 0.04
    values = {("text-only", k, s): v + (0.01 if s else -0.01) for k, v in enumerate(text) for s in (0, 1)}
    values |= {("implicit", k, s): v for k, v in enumerate(implicit) for s in (0, 1)}
    del values["implicit", 4, 1]  # fold 4 of implicit is unfinished: left out of its row and the pairs
    write_results(config.runs(config.base_job()), values)

    outcome = summarize(config, config.runs(config.base_job()))
    text_row, implicit_row, longer = outcome.rows
    assert text_row.values == pytest.approx(dict(enumerate(text)))  # seeds averaged within each fold
    assert implicit_row.mean == pytest.approx(sum(implicit[:4]) / 4) and len(implicit_row.values) == 4
    assert longer.values == {} and outcome.table().rows[2][1:3] == ["0/5", "-"]

    (comparison,) = outcome.comparisons
    assert comparison.differences == pytest.approx({0: 0.02, 1: 0.05, 2: 0.03, 3: 0.06})
    write_results(config.runs(config.base_job()), {("implicit", 4, 1): implicit[4]})
    (comparison,) = summarize(config, config.runs(config.base_job())).comparisons
    # by hand: mean 0.04, sample std sqrt(0.001 / 4); Nadeau-Bengio half-width over 5 folds:
    # t(0.975, 4) * std * sqrt(1/5 + 1/4), wider than the plain t's std / sqrt(5) by sqrt(2.25) = 1.5
    half = T_975_DF4 * math.sqrt(0.001 / 4) * math.sqrt(1 / 5 + 1 / 4)
    assert comparison.mean == pytest.approx(0.04)
    assert comparison.interval == pytest.approx((0.04 - half, 0.04 + half), abs=1e-6)
    assert comparison.interval == pytest.approx((0.010552, 0.069448), abs=1e-6)
    outcome = summarize(config, config.runs(config.base_job()))
    assert outcome.comparison_table().rows == [["implicit − text-only", 5, "+0.0400", "[+0.0106, +0.0694]"]]
    assert "seeds averaged within a fold" in outcome.report() and "Nadeau & Bengio" in outcome.report()


def test_a_single_fold_pair_has_no_interval(job_file):
    config = spec(job_file, compare=[["implicit", "text-only"]])
    write_results(
        config.runs(config.base_job()),
        {("implicit", 0, s): 0.7 for s in (0, 1)} | {("text-only", 0, s): 0.6 for s in (0, 1)},
    )
    (comparison,) = summarize(config, config.runs(config.base_job())).comparisons
    assert comparison.mean == pytest.approx(0.1) and comparison.interval is None


def test_a_control_row_scores_its_rule_on_each_fold_test_split_without_training(job_file):
    config = spec(job_file)
    runs = [run for run in config.runs(config.base_job()) if run.row == "longer" and run.seed == 0]
    for run in runs:
        result = control_result(run)
        expected = longer_response_accuracy(run.job.data.prepare.output_dir)
        assert result == {
            "test/accuracy": expected.accuracy,
            "test/count": expected.pairs,
            "control": "longer_response",
        }
        assert result["test/count"] > 0 and 0 <= result["test/accuracy"] <= 1
    assert sum(control_result(run)["test/count"] for run in runs) == sum(
        WORKERS.values()
    )  # the folds' test splits: every row


def test_a_reproduction_of_control_rows_only_starts_no_ray_and_resumes(job_file, monkeypatch):
    from gazerm import runtime
    from gazerm.features import featurize

    def no_ray(*args, **kwargs):
        raise AssertionError("a control row started Ray")

    for module in (runtime, featurize):  # whether or not an earlier test left a Ray running
        monkeypatch.setattr(module, "init_ray", no_ray)
    config = spec(job_file, compare=[["longer", "text-only"]])
    outcome = run_reproduction(config, only=["longer"])
    longer = outcome.rows[2]
    assert len(longer.values) == FOLDS and outcome.comparisons[0].differences == {}
    root = Path(config.base_job().output_dir) / "reproduce"
    assert (root / "longer" / "fold1" / "seed1" / "result.json").exists()
    data = json.loads((root / "reproduce.json").read_text())
    assert data["folds"] == FOLDS and data["rows"][2]["mean"] == pytest.approx(longer.mean)
    assert data["comparisons"] == [
        {"a": "longer", "b": "text-only", "differences": {}, "folds": 3, "mean": None, "interval": None}
    ]
    assert run_reproduction(config, only=["longer"]).rows[2].values == longer.values  # read back
