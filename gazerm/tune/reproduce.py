"""``gazerm reproduce``: a paper's results table, re-run — every row (a configuration: baseline, GazeConcat,
GazeAdd, a feature set) trained once per seed from one training job, each run's best-validation model
scored on the test split, and per row the test accuracy's mean ± standard deviation over the seeds beside
the number the paper published for it (only where one was read in the paper; the spec says where).

Each run trains in ``<job output_dir>/reproduce/<row>/seed<seed>`` and records its test metrics in
``result.json`` there; a re-run skips finished runs and resumes unfinished ones from their checkpoints,
so ``--row NAME`` runs a table row at a time and the full table is read back whole. MLflow: one parent
run per reproduction with each training run nested in it, and the table as ``reproduce.md`` beside
``reproduce.json``.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gazerm.config import check_unique, load_config, override, overrides_from
from gazerm.errors import ConfigError
from gazerm.storage import is_object_store
from gazerm.table import Table
from gazerm.train.config import TrainJobConfig

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"  # a directory name and an MLflow run name
RESULT_FILE = "result.json"
REPORT_FILES = ("reproduce.md", "reproduce.json")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Row(_Strict):
    """One configuration of the table: the job's settings it changes (``--set`` paths), and the paper's
    published number for it, if the paper gives one."""

    name: str = Field(pattern=NAME_PATTERN)
    overrides: dict[str, Any] = Field(default_factory=dict)
    published: float | None = Field(default=None, ge=0, le=1)


class ReproduceConfig(_Strict):
    """``job``: the training job YAML every run starts from; ``overrides`` change it for every row (a
    smaller cluster, another tracking store); ``published_source`` names where ``published`` numbers
    come from (paper, table), and stays None when the paper's numbers were not found."""

    name: str = Field(pattern=NAME_PATTERN)
    job: str
    overrides: dict[str, Any] = Field(default_factory=dict)
    rows: list[Row] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    metric: str = Field(default="test/accuracy", pattern=r"^test/")
    published_source: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ReproduceConfig:
        check_unique("row", [row.name for row in self.rows])
        check_unique("seed", self.seeds)
        if any(row.published is not None for row in self.rows) and not self.published_source:
            raise ValueError("published numbers need published_source: where in the paper they are")
        return self

    def base_job(self, tracking_uri: str | None = None) -> TrainJobConfig:
        settings = overrides_from(self.overrides)
        if tracking_uri:
            settings.append(override("tracking.tracking_uri", tracking_uri))
        job = load_config(TrainJobConfig, self.job, settings)
        if is_object_store(job.output_dir):
            raise ConfigError(f"{self.job}: output_dir must be a local or mounted path to reproduce from")
        return job

    def runs(self, base: TrainJobConfig, only: list[str] | None = None) -> list[Run]:
        """Every (row, seed) training job, in table order; ``only`` keeps the rows named."""
        unknown = sorted(set(only or []) - {row.name for row in self.rows})
        if unknown:
            raise ConfigError(f"unknown row(s) {unknown}; the rows are {[row.name for row in self.rows]}")
        root = Path(base.output_dir).resolve() / "reproduce"
        return [
            Run(row.name, seed, _job(base, row, seed, root / row.name / f"seed{seed}"))
            for row in self.rows
            if not only or row.name in only
            for seed in self.seeds
        ]


def _job(base: TrainJobConfig, row: Row, seed: int, directory: Path) -> TrainJobConfig:
    """The row's job for one seed: its own output directory and seeds (data order and initialisation),
    the best-validation model tested; a row that changes the data prepares it into a directory named by
    that data's settings (rows with the same data share one)."""
    settings = [
        override("name", f"{base.name}-{row.name}-seed{seed}"),
        override("output_dir", str(directory)),
        override("run.seed", seed),
        override("model.seed", seed),
        override("run.select", "best"),
        *overrides_from(row.overrides),
    ]
    try:
        job = load_config(TrainJobConfig, base.model_dump(mode="json"), settings)
    except ConfigError as error:
        raise ConfigError(f"row {row.name!r}: {error}") from error
    if job.data.prepare is not None and job.data.prepare != base.data.prepare:
        settings = job.data.prepare.model_dump(mode="json", exclude={"output_dir"})
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
        job.data.prepare.output_dir = f"{base.data.prepare.output_dir}-{digest}"
    return job


@dataclass(frozen=True)
class Run:
    row: str
    seed: int
    job: TrainJobConfig

    @property
    def result_file(self) -> Path:
        return Path(self.job.output_dir) / RESULT_FILE


@dataclass
class RowResult:
    row: str
    values: list[float]  # the metric of each finished seed, in seed order
    published: float | None

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """The sample standard deviation over seeds (None below two)."""
        return statistics.stdev(self.values) if len(self.values) > 1 else None


@dataclass
class ReproduceOutcome:
    metric: str
    seeds: int
    published_source: str | None
    rows: list[RowResult] = field(default_factory=list)

    def table(self) -> Table:
        published = "published" if self.published_source else "published (not found)"
        rows = [[r.row, f"{len(r.values)}/{self.seeds}", _mean_std(r), r.published] for r in self.rows]
        return Table(["row", "seeds", f"{self.metric} mean ± std", published], rows)

    def report(self) -> str:
        source = self.published_source or "the paper's numbers were not found; none are shown"
        return f"{self.table().markdown()}\npublished: {source}\n"


def _mean_std(result: RowResult) -> str:
    if result.mean is None:
        return "-"
    spread = "n/a" if result.std is None else f"{result.std:.4f}"
    return f"{result.mean:.4f} ± {spread}"


def summarize(config: ReproduceConfig, runs: list[Run]) -> ReproduceOutcome:
    """The table from the result files the runs have written so far (every row of the spec, finished
    seeds only)."""
    outcome = ReproduceOutcome(config.metric, len(config.seeds), config.published_source)
    for row in config.rows:
        values = [
            json.loads(run.result_file.read_text())[config.metric]
            for run in runs
            if run.row == row.name and run.result_file.exists()
        ]
        outcome.rows.append(RowResult(row.name, values, row.published))
    return outcome


def run_reproduction(
    config: ReproduceConfig, only: list[str] | None = None, tracking_uri: str | None = None
) -> ReproduceOutcome:
    """Train every (row, seed) not finished yet, then summarize every row (see the module doc)."""
    from gazerm.runtime import init_ray
    from gazerm.track.mlflow_tracking import start_run
    from gazerm.train.job import run_training

    base = config.base_job(tracking_uri)
    tracking_uri = base.resolved_tracking_uri()
    todo = config.runs(base, only)
    init_ray(base.run.num_workers * base.run.cpus_per_worker)
    root = Path(base.output_dir).resolve() / "reproduce"
    root.mkdir(parents=True, exist_ok=True)
    parent = start_run(
        tracking_uri, base.tracking.experiment, config.name, config.model_dump(mode="json"), str(root)
    )
    for index, run in enumerate(todo, start=1):
        if run.result_file.exists():
            print(f"[gazerm] {run.row} seed {run.seed}: done before, skipped", flush=True)
            continue
        print(f"[gazerm] run {index}/{len(todo)}: {run.row} seed {run.seed}", flush=True)
        outcome = run_training(run.job, parent_run_id=parent)
        if config.metric not in outcome.metrics:
            raise ConfigError(
                f"{run.row}: the run has no {config.metric} (its dataset needs a non-empty test split; "
                f"it reported {sorted(k for k in outcome.metrics if k.startswith('test/'))})"
            )
        run.result_file.write_text(json.dumps({**outcome.metrics, "run_id": outcome.run_id}))
    outcome = summarize(config, config.runs(base))
    _publish(outcome, tracking_uri, parent, root)
    return outcome


def _publish(outcome: ReproduceOutcome, tracking_uri: str, parent: str, root: Path) -> None:
    from mlflow.tracking import MlflowClient

    from gazerm.track.mlflow_tracking import finish_run

    report = outcome.report()
    rows = [{**asdict(r), "mean": r.mean, "std": r.std} for r in outcome.rows]
    (root / REPORT_FILES[0]).write_text(report)
    (root / REPORT_FILES[1]).write_text(json.dumps(rows, indent=2))
    client = MlflowClient(tracking_uri)
    client.log_text(parent, report, REPORT_FILES[0])
    client.log_dict(parent, rows, REPORT_FILES[1])
    finish_run(tracking_uri, parent, None, {"rows": rows})
    print(f"[gazerm] {outcome.metric} per row over seeds:\n{report}", flush=True)
