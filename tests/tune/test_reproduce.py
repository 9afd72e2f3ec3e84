"""``gazerm reproduce``: the spec, the (row, seed) jobs it makes, the mean ± std table, and one small
reproduction end to end (2 rows × 1 seed on the gaze-decided synthetic set, resumed and re-read; the
summary over several seeds is tested on recorded results)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from gazerm.errors import ConfigError
from gazerm.train.config import DataConfig, OptimConfig, RunConfig, TrackingConfig, TrainJobConfig
from gazerm.tune.reproduce import ReproduceConfig, run_reproduction, summarize
from tests.helpers import prepare_gaze_decided

ROWS = [
    {"name": "text-only", "overrides": {"model.fusion": "none"}},
    {"name": "concat-TRT", "overrides": {"model": {"fusion": "concat", "features_used": [0, 0, 0, 1, 0]}}},
]


def spec(job: Path, **fields) -> ReproduceConfig:
    return ReproduceConfig.model_validate({"name": "paper", "job": str(job), "rows": ROWS, **fields})


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"name": "base", "output_dir": str(tmp_path / "run")}))
    return path


def test_a_rows_overrides_may_be_dotted_paths_or_nested_sections(job_file):
    base = spec(job_file).base_job()
    text_only, concat = (run.job for run in spec(job_file, seeds=[3]).runs(base))
    assert (text_only.model.fusion, text_only.run.seed, text_only.run.select) == ("none", 3, "best")
    assert (concat.model.fusion, concat.model.features_used) == ("concat", [0, 0, 0, 1, 0])
    assert concat.model.lora == base.model.lora  # a nested section sets its fields, not the whole section


def test_every_row_and_seed_gets_its_own_job(job_file, tmp_path):
    config = spec(job_file, seeds=[3, 4], overrides={"run": {"num_workers": 1}})
    runs = config.runs(config.base_job())
    assert [(run.row, run.seed) for run in runs] == [
        ("text-only", 3),
        ("text-only", 4),
        ("concat-TRT", 3),
        ("concat-TRT", 4),
    ]
    last = runs[-1].job
    assert last.output_dir == str(tmp_path / "run" / "reproduce" / "concat-TRT" / "seed4")
    assert (last.run.seed, last.model.seed, last.run.select, last.run.num_workers) == (4, 4, "best", 1)
    assert last.model.features_used == [0, 0, 0, 1, 0] and runs[0].job.model.fusion == "none"
    # Both rows train on the base job's data: one prepared dataset serves them.
    assert {run.job.data.prepare.output_dir for run in runs} == {config.base_job().data.prepare.output_dir}
    assert [run.row for run in config.runs(config.base_job(), only=["concat-TRT"])] == ["concat-TRT"] * 2


def test_a_row_that_changes_the_data_prepares_its_own(job_file):
    own_data = {"overrides": {"data.prepare.gaze.predictor": "none"}}
    rows = [*ROWS, {"name": "no-gaze", **own_data}, {"name": "no-gaze-add", **own_data}]
    config = spec(job_file, rows=rows)
    config.rows[-1].overrides["model.fusion"] = "add"
    base = config.base_job()
    dirs = {run.row: run.job.data.prepare.output_dir for run in config.runs(base)}
    assert dirs["text-only"] == dirs["concat-TRT"] == base.data.prepare.output_dir
    assert dirs["no-gaze"] == dirs["no-gaze-add"] != base.data.prepare.output_dir  # the same data: shared
    assert dirs["no-gaze"].startswith(f"{base.data.prepare.output_dir}-")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rows": [ROWS[0], ROWS[0]]}, r"duplicate row\(s\) \['text-only'\]"),
        ({"seeds": [1, 1]}, "duplicate seed"),
        ({"rows": [{**ROWS[0], "published": 0.7}]}, "published_source"),
        ({"metric": "val/accuracy"}, "metric"),
    ],
)
def test_a_bad_spec_is_refused(job_file, fields, message):
    with pytest.raises(ValueError, match=message):
        spec(job_file, **fields)


def test_bad_rows_are_named(job_file):
    config = spec(job_file, rows=[{"name": "typo", "overrides": {"model.fusoin": "add"}}])
    with pytest.raises(ConfigError, match=r"row 'typo'.*fusoin"):
        config.runs(config.base_job())
    with pytest.raises(ConfigError, match=r"unknown row\(s\) \['nope'\]"):
        spec(job_file).runs(spec(job_file).base_job(), only=["nope"])


def test_the_table_shows_mean_and_sample_std_over_finished_seeds(job_file):
    config = spec(
        job_file,
        rows=[{**ROWS[0], "published": 0.61}, ROWS[1]],
        seeds=[0, 1],
        published_source="the paper, Table 2",
    )
    runs = config.runs(config.base_job())
    for run, value in zip(runs[:3], [0.5, 0.6, 0.9], strict=True):  # concat-TRT seed 2 not finished
        Path(run.job.output_dir).mkdir(parents=True)
        run.result_file.write_text(json.dumps({"test/accuracy": value}))
    outcome = summarize(config, runs)
    assert outcome.rows[0].mean == pytest.approx(0.55) and outcome.rows[0].std == pytest.approx(
        statistics.stdev([0.5, 0.6])
    )
    assert outcome.rows[1].values == {0: 0.9} and outcome.rows[1].std is None
    table = outcome.table()
    assert table.rows[0] == ["text-only", "2/2", "0.5500 ± 0.0707", 0.61]
    assert table.rows[1] == ["concat-TRT", "1/2", "0.9000 ± n/a", None]
    assert "published: the paper, Table 2" in outcome.report()


def test_without_a_source_the_table_says_the_numbers_were_not_found(job_file):
    config = spec(job_file)
    report = summarize(config, config.runs(config.base_job())).report()
    assert "published (not found)" in report and "numbers were not found" in report


@pytest.mark.slow
@pytest.mark.usefixtures("tracking_uri")  # tmp_path/mlflow.db: a copy of an empty store, not created
def test_a_small_reproduction_end_to_end_and_resumed(tmp_path, ray_local):
    manifest = prepare_gaze_decided(tmp_path, n=300, seed=2)
    job = TrainJobConfig(
        name="paper",
        output_dir=str(tmp_path / "run"),
        data=DataConfig(dataset_dir=str(tmp_path / "shards"), prepare=None, max_length=64),
        optim=OptimConfig(lr=5e-3, warmup_ratio=0.0),
        # one worker: a run starts ~2.5 s sooner; 2-rank runs are tests/train/test_e2e_train.py's
        run=RunConfig(num_workers=1, micro_batch_size=16, max_steps=12, eval_every=6),
        tracking=TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
    )
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job.model_dump(mode="json")))
    config = spec(tmp_path / "job.yaml", seeds=[0])

    first = run_reproduction(config, only=["concat-TRT"])
    assert [len(row.values) for row in first.rows] == [0, 1]  # only the row asked for ran
    outcome = run_reproduction(config)  # the other row now; concat-TRT's runs are read back, not retrained

    text, concat = outcome.rows
    assert len(text.values) == len(concat.values) == 1
    assert concat.mean >= 0.8 and concat.mean > text.mean + 0.2  # only gaze carries the preference
    for run in config.runs(config.base_job()):
        result = json.loads(run.result_file.read_text())
        assert result["test/count"] == manifest.rows("test") and result["selected_step"] in (6, 12)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs(client.get_experiment_by_name("gazerm").experiment_id)
    parent = next(run for run in runs if run.info.run_name == "paper")
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2  # one per row and seed: nothing trained twice
    assert (tmp_path / "run" / "reproduce" / "reproduce.md").read_text() == outcome.report()
