"""``gazerm reproduce``: a paper's results table, re-run — every row (a configuration: baseline, GazeConcat,
GazeAdd, a feature set) trained once per seed from one training job, each run's best-validation model
scored on the test split, and per row the test accuracy's mean ± standard deviation over the seeds beside
the number the paper published for it (only where one was read in the paper; the spec says where).

Each run trains in ``<job output_dir>/reproduce/<row>/seed<seed>`` and records its test metrics in
``result.json`` there; a re-run skips finished runs and resumes unfinished ones from their checkpoints,
so ``--row NAME`` runs a table row at a time and the full table is read back whole. MLflow: one parent
run per reproduction with each training run nested in it, and the table as ``reproduce.md`` beside
``reproduce.json``.

With ``folds`` (cross-validation over the job's ``group_kfold`` split) every (row, fold, seed) is a run, in
``<row>/fold<k>/seed<seed>``; a fold's number is the mean over its seeds (a fold counts once all its seeds
finished), and a row's is the mean ± sample std over folds. ``compare`` pairs two rows fold by fold: the
mean of the per-fold differences with its 95% interval (a Student t corrected for the folds' overlapping
training sets). A ``control`` row trains nothing: its
"model" is a rule scored on each fold's test split (``gazerm.evaluate.baselines``), one identical
``result.json`` per seed so that the table, comparisons and resume treat it like any row.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from scipy.stats import t as student_t

from gazerm.config import StrictConfig, check_unique, load_config, with_overrides
from gazerm.errors import ConfigError
from gazerm.evaluate.baselines import CONTROLS, Control
from gazerm.storage import is_object_store, write_text_atomic
from gazerm.table import Table
from gazerm.train.config import TrainJobConfig

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"  # a directory name and an MLflow run name
RESULT_FILE = "result.json"
REPORT_FILES = ("reproduce.md", "reproduce.json")
CONFIDENCE = 0.95


class Row(StrictConfig):
    """One configuration of the table: the job's settings it changes (``--set`` paths), and the paper's
    published number for it, if the paper gives one. A ``control`` row trains nothing: it scores a rule
    (``longer_response``: the longer response is the chosen one) on the test split of the row's data."""

    name: str = Field(pattern=NAME_PATTERN)
    overrides: dict[str, Any] = Field(default_factory=dict)
    published: float | None = Field(default=None, ge=0, le=1)
    control: Control | None = None


class ReproduceConfig(StrictConfig):
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
    folds: int | None = Field(
        default=None, ge=2, description="run every row and seed on each fold of the job's group_kfold split"
    )
    compare: list[tuple[str, str]] = Field(
        default_factory=list, description="[row_a, row_b] pairs: a - b fold by fold, with a t-interval"
    )

    @model_validator(mode="after")
    def _consistent(self) -> ReproduceConfig:
        check_unique("row", [row.name for row in self.rows])
        check_unique("seed", self.seeds)
        if any(row.published is not None for row in self.rows) and not self.published_source:
            raise ValueError("published numbers need published_source: where in the paper they are")
        if any(row.control for row in self.rows) and self.metric != "test/accuracy":
            raise ValueError(f"control rows give test/accuracy only, not metric {self.metric}")
        self._check_compare()
        return self

    def _check_compare(self) -> None:
        names = [row.name for row in self.rows]
        unknown = sorted({name for pair in self.compare for name in pair} - set(names))
        if unknown:
            raise ValueError(f"compare: unknown row(s) {unknown}; the rows are {names}")
        if any(a == b for a, b in self.compare):
            raise ValueError("compare: a row compared with itself")
        if self.compare and self.folds is None:
            raise ValueError("compare pairs two rows fold by fold: it needs folds")

    def base_job(self, tracking_uri: str | None = None) -> TrainJobConfig:
        settings = self.overrides | ({"tracking.tracking_uri": tracking_uri} if tracking_uri else {})
        job = load_config(TrainJobConfig, self.job, settings)
        if is_object_store(job.output_dir):
            raise ConfigError(f"{self.job}: output_dir must be a local or mounted path to reproduce from")
        return job

    def runs(self, base: TrainJobConfig, only: list[str] | None = None) -> list[Run]:
        """Every (row, fold, seed) job, in table order; ``only`` keeps the rows named."""
        unknown = sorted(set(only or []) - {row.name for row in self.rows})
        if unknown:
            raise ConfigError(f"unknown row(s) {unknown}; the rows are {[row.name for row in self.rows]}")
        if self.folds is not None:
            check_folds(base, self.folds, self.job)
        root = Path(base.output_dir).resolve() / "reproduce"
        folds = [None] if self.folds is None else list(range(self.folds))
        return [
            Run(row.name, seed, _job(base, row, seed, fold, self.folds, root), fold, row.control)
            for row in self.rows
            if not only or row.name in only
            for fold in folds
            for seed in self.seeds
        ]


def check_folds(job: TrainJobConfig, folds: int, where: str) -> None:
    """Runs over folds set ``data.prepare.fold`` only: the job must already split by group into as many."""
    prepare = job.data.prepare
    if prepare is None or prepare.split_method != "group_kfold" or prepare.folds != folds:
        found = "data.dataset_dir" if prepare is None else f"{prepare.split_method}, folds {prepare.folds}"
        raise ConfigError(
            f"{where}: folds: {folds} needs data.prepare with split_method: group_kfold and folds: {folds} "
            f"(the job has {found})"
        )


def run_path(row: str, fold: int | None, seed: int) -> Path:
    """``<row>/seed<s>``, or ``<row>/fold<k>/seed<s>`` over folds: a run's directory under ``reproduce``."""
    return Path(row, *([] if fold is None else [f"fold{fold}"]), f"seed{seed}")


def _job(
    base: TrainJobConfig, row: Row, seed: int, fold: int | None, folds: int | None, root: Path
) -> TrainJobConfig:
    """The row's job for one seed (and fold): its own output directory and seeds (data order and
    initialisation), the best-validation model tested; a row that changes the data (as every fold does)
    prepares it into a directory named by that data's settings (rows with the same data share one)."""
    path = run_path(row.name, fold, seed)
    settings = {
        "name": "-".join([base.name, *path.parts]),
        "output_dir": str(root / path),
        "run.seed": seed,
        "model.seed": seed,
        "run.select": "best",
        **row.overrides,
        **({} if fold is None else {"data.prepare.fold": fold}),
    }
    try:
        job = with_overrides(base, settings)
        if folds is not None:
            check_folds(job, folds, "the job")
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
    fold: int | None = None
    control: Control | None = None

    @property
    def result_file(self) -> Path:
        return Path(self.job.output_dir) / RESULT_FILE

    @property
    def label(self) -> str:
        return f"seed {self.seed}" if self.fold is None else f"fold {self.fold} seed {self.seed}"


def _mean(values: dict[int, float]) -> float | None:
    return statistics.fmean(values.values()) if values else None


def _std(values: dict[int, float]) -> float | None:
    """The sample standard deviation (None below two values)."""
    return statistics.stdev(values.values()) if len(values) > 1 else None


@dataclass
class RowResult:
    row: str
    values: dict[int, float]  # per finished seed; over folds, per fold whose seeds all finished (their mean)
    published: float | None

    @property
    def mean(self) -> float | None:
        return _mean(self.values)

    @property
    def std(self) -> float | None:
        return _std(self.values)


@dataclass
class Comparison:
    """Row ``a`` against row ``b`` on the same folds of a ``folds``-fold cross-validation: the per-fold
    differences a - b (folds both finished)."""

    a: str
    b: str
    differences: dict[int, float]
    folds: int

    @property
    def mean(self) -> float | None:
        return _mean(self.differences)

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95% interval of the mean difference over folds (None below two): Nadeau and Bengio's
        corrected resampled t (2003), Student t with df = n - 1 and the variance s² (1/n + n_test/n_train),
        n_test/n_train = 1/(folds - 1). The folds' training sets overlap, so their differences are
        correlated and the plain s²/n would give an interval too narrow."""
        std = _std(self.differences)
        if std is None:
            return None
        n = len(self.differences)
        scale = std * math.sqrt(1 / n + 1 / (self.folds - 1))
        half = student_t.ppf((1 + CONFIDENCE) / 2, n - 1) * scale
        return self.mean - half, self.mean + half


@dataclass
class ReproduceOutcome:
    metric: str
    seeds: int
    folds: int | None
    published_source: str | None
    rows: list[RowResult] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)

    def table(self) -> Table:
        unit, total = ("seeds", self.seeds) if self.folds is None else ("folds", self.folds)
        published = "published" if self.published_source else "published (not found)"
        rows = [[r.row, f"{len(r.values)}/{total}", _mean_std(r), r.published] for r in self.rows]
        return Table(["row", unit, f"{self.metric} mean ± std", published], rows)

    def comparison_table(self) -> Table:
        rows = [
            [f"{c.a} − {c.b}", len(c.differences), _signed(c.mean), _interval(c)] for c in self.comparisons
        ]
        return Table(["comparison", "folds", "mean difference", "95% t-interval"], rows)

    def report(self) -> str:
        source = self.published_source or "the paper's numbers were not found; none are shown"
        text = f"{self.table().markdown()}\npublished: {source}\n"
        if self.folds is not None:
            text += f"{self.folds} folds: seeds averaged within a fold, then mean ± sample std over folds\n"
        if self.comparisons:
            comparisons = self.comparison_table().markdown()
            text += (
                f"\n{comparisons}\npaired by fold: mean difference, 95% corrected resampled t over folds "
                "(Nadeau & Bengio 2003: variance s²(1/n + 1/(folds-1)), df = n - 1)\n"
            )
        return text

    def to_json(self) -> dict[str, Any]:
        rows = [{**asdict(r), "mean": r.mean, "std": r.std} for r in self.rows]
        comparisons = [{**asdict(c), "mean": c.mean, "interval": c.interval} for c in self.comparisons]
        return {"metric": self.metric, "folds": self.folds, "rows": rows, "comparisons": comparisons}


def _mean_std(result: RowResult) -> str:
    if result.mean is None:
        return "-"
    spread = "n/a" if result.std is None else f"{result.std:.4f}"
    return f"{result.mean:.4f} ± {spread}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


def _interval(comparison: Comparison) -> str:
    interval = comparison.interval
    return "n/a" if interval is None else f"[{interval[0]:+.4f}, {interval[1]:+.4f}]"


def summarize(config: ReproduceConfig, runs: list[Run]) -> ReproduceOutcome:
    """The table from the result files the runs have written so far (every row of the spec, finished
    seeds only; over folds, the folds whose seeds all finished) and the comparisons of its rows."""
    outcome = ReproduceOutcome(config.metric, len(config.seeds), config.folds, config.published_source)
    finished = {
        (run.row, run.fold, run.seed): json.loads(run.result_file.read_text())[config.metric]
        for run in runs
        if run.result_file.exists()
    }
    for row in config.rows:
        outcome.rows.append(RowResult(row.name, _row_values(config, finished, row.name), row.published))
    values = {result.row: result.values for result in outcome.rows}
    for a, b in config.compare:
        both = sorted(set(values[a]) & set(values[b]))
        differences = {k: values[a][k] - values[b][k] for k in both}
        outcome.comparisons.append(Comparison(a, b, differences, config.folds))
    return outcome


def _row_values(
    config: ReproduceConfig, finished: dict[tuple[str, int | None, int], float], row: str
) -> dict[int, float]:
    """Per seed; over folds, per fold the mean over its seeds, for the folds whose seeds all finished."""
    if config.folds is None:
        return {seed: finished[row, None, seed] for seed in config.seeds if (row, None, seed) in finished}
    per_fold = {k: [finished.get((row, k, seed)) for seed in config.seeds] for k in range(config.folds)}
    return {k: statistics.fmean(seeds) for k, seeds in per_fold.items() if None not in seeds}


def run_reproduction(
    config: ReproduceConfig, only: list[str] | None = None, tracking_uri: str | None = None
) -> ReproduceOutcome:
    """Run every (row, fold, seed) not finished yet, then summarize every row (see the module doc)."""
    from gazerm.track.mlflow_tracking import start_run

    base = config.base_job(tracking_uri)
    tracking_uri = base.resolved_tracking_uri()
    todo = config.runs(base, only)
    root = Path(base.output_dir).resolve() / "reproduce"
    root.mkdir(parents=True, exist_ok=True)
    parent = start_run(
        tracking_uri, base.tracking.experiment, config.name, config.model_dump(mode="json"), str(root)
    )
    reserved = base.run.num_workers * base.run.cpus_per_worker
    for index, run in enumerate(todo, start=1):
        if run.result_file.exists():
            print(f"[gazerm] {run.row} {run.label}: done before, skipped", flush=True)
            continue
        print(f"[gazerm] run {index}/{len(todo)}: {run.row} {run.label}", flush=True)
        result = control_result(run) if run.control else _trained_result(run, config.metric, parent, reserved)
        write_text_atomic(run.result_file, json.dumps(result))  # a result file is a finished run
    outcome = summarize(config, config.runs(base))
    _publish(outcome, tracking_uri, parent, root)
    return outcome


def _trained_result(run: Run, metric: str, parent: str, reserved_cpus: float) -> dict[str, Any]:
    """Train the run's job (nested in the parent MLflow run) and return its test metrics."""
    from gazerm.runtime import init_ray
    from gazerm.train.job import run_training

    if not run.job.model.frozen:  # here, not up front: a control or a frozen-backbone run needs no Ray
        init_ray(reserved_cpus)
    outcome = run_training(run.job, parent_run_id=parent)
    if metric not in outcome.metrics:
        raise ConfigError(
            f"{run.row}: the run has no {metric} (its dataset needs a non-empty test split; "
            f"it reported {sorted(k for k in outcome.metrics if k.startswith('test/'))})"
        )
    return {**outcome.metrics, "run_id": outcome.run_id}


def control_result(run: Run) -> dict[str, Any]:
    """A control row's result: its rule scored on the test split of the run's data (prepared if need be;
    in this process below ``AUTO_LOCAL_ROWS`` rows with ``gaze.backend: auto``)."""
    from gazerm.train.job import ensure_dataset

    root, _ = ensure_dataset(run.job)
    accuracy = CONTROLS[run.control](root, "test")
    if not accuracy.pairs:
        raise ConfigError(f"{run.row}: {root} has no labelled pairs in its test split")
    return {"test/accuracy": accuracy.accuracy, "test/count": accuracy.pairs, "control": run.control}


def _publish(outcome: ReproduceOutcome, tracking_uri: str, parent: str, root: Path) -> None:
    from mlflow.tracking import MlflowClient

    from gazerm.track.mlflow_tracking import finish_run

    report = outcome.report()
    data = outcome.to_json()
    write_text_atomic(root / REPORT_FILES[0], report)
    write_text_atomic(root / REPORT_FILES[1], json.dumps(data, indent=2))
    client = MlflowClient(tracking_uri)
    client.log_text(parent, report, REPORT_FILES[0])
    client.log_dict(parent, data, REPORT_FILES[1])
    finish_run(tracking_uri, parent, None, data)
    print(f"[gazerm] {outcome.metric} per row:\n{report}", flush=True)
