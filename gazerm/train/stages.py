"""``gazerm train-staged``: customized (domain) reward models trained in stages, as in DSP.

A general reward model is trained first; each later stage continues from the previous stage's
exported model (``model.init_from``) on its own preferences, e.g. one DSP domain. After every
stage its model is scored on every evaluation set, so the table shows what the domain stage gains
on its own data and what it keeps (or loses) of the general preference ability.

MLflow: the staged job is one parent run (the accuracy table as ``stage/<stage>/<set>/accuracy``
metrics and ``stages.md``/``stages.json`` artifacts) with each stage's training run nested in it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from gazerm.config import StrictConfig, check_unique, with_overrides
from gazerm.data.config import PrepareConfig
from gazerm.errors import ConfigError
from gazerm.storage import is_object_store
from gazerm.table import Table
from gazerm.train.checkpoints import MODEL_DIR
from gazerm.train.config import TrainJobConfig

# What a stage may change of the base job; everything else (backbone, fusion, LoRA) must stay, or the
# previous stage's weights could not carry over.
STAGE_OVERRIDES = ("optim.lr", "run.max_steps", "run.epochs", "loss.lm_loss_coeff", "model.pooling")
# Stage and evaluation-set names become directory names and MLflow metric keys.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
TABLE_FILES = ("stages.md", "stages.json")


class Stage(StrictConfig):
    """One stage: its preference data (prepared shards or a ``prepare`` section) and what it overrides."""

    name: str = Field(pattern=NAME_PATTERN)
    dataset_dir: str | None = None
    prepare: PrepareConfig | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_origin(self) -> Stage:
        if (self.dataset_dir is None) == (self.prepare is None):
            raise ValueError(f"stage {self.name!r}: set exactly one of dataset_dir or prepare")
        return self

    @field_validator("overrides")
    @classmethod
    def _known_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(STAGE_OVERRIDES))
        if unknown:
            raise ValueError(
                f"unknown override key(s) {unknown}; a stage may override {list(STAGE_OVERRIDES)}"
            )
        return value

    @property
    def shards_dir(self) -> str:
        return self.dataset_dir or self.prepare.output_dir


class EvalSet(StrictConfig):
    """A split to report on: a stage's data (``stage``) or any prepared ``dataset_dir``."""

    name: str = Field(pattern=NAME_PATTERN)
    stage: str | None = None
    dataset_dir: str | None = None
    split: str = "validation"

    @model_validator(mode="after")
    def _one_origin(self) -> EvalSet:
        if (self.stage is None) == (self.dataset_dir is None):
            raise ValueError(f"eval set {self.name!r}: set exactly one of stage or dataset_dir")
        return self


class StagedJobConfig(StrictConfig):
    """``base`` is the training job every stage starts from (its ``data`` is replaced by the stage's);
    stage *k* trains in ``<base.output_dir>/<stage name>`` from stage *k-1*'s exported model.
    ``eval_sets`` default to every stage's validation split."""

    base: TrainJobConfig = Field(default_factory=TrainJobConfig)
    stages: list[Stage] = Field(min_length=1)
    eval_sets: list[EvalSet] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> StagedJobConfig:
        if is_object_store(self.base.output_dir):
            raise ValueError(
                "base.output_dir: staged jobs need a local or mounted path (each stage reads the last)"
            )
        check_unique("stage name", [stage.name for stage in self.stages])
        if not self.eval_sets:
            self.eval_sets = [EvalSet(name=stage.name, stage=stage.name) for stage in self.stages]
        check_unique("eval set name", [evaluation.name for evaluation in self.eval_sets])
        names = {stage.name for stage in self.stages}
        for evaluation in self.eval_sets:
            if evaluation.stage is not None and evaluation.stage not in names:
                raise ValueError(f"eval set {evaluation.name!r} names unknown stage {evaluation.stage!r}")
        with_lm_head = {job.loss.lm_loss_coeff > 0 for job in self.jobs()}
        if len(with_lm_head) > 1:
            raise ValueError(
                "loss.lm_loss_coeff must be > 0 in every stage or in none: the LM head is part of the "
                "model each stage hands to the next"
            )
        return self

    def jobs(self, tracking_uri: str | None = None) -> list[TrainJobConfig]:
        """Each stage's training job; raises ConfigError naming the stage and field of a bad override."""
        root = Path(self.base.output_dir).resolve()
        jobs = []
        for index, stage in enumerate(self.stages):
            settings = {
                "data.dataset_dir": stage.dataset_dir,
                "data.prepare": _dump(stage.prepare),
                "tracking.tracking_uri": tracking_uri or self.base.tracking.tracking_uri,
                "name": f"{self.base.name}-{stage.name}",
                "output_dir": str(root / stage.name),
                **stage.overrides,
            }
            if index > 0:
                settings["model.init_from"] = str(root / self.stages[index - 1].name / MODEL_DIR)
            try:
                jobs.append(with_overrides(self.base, settings))
            except ConfigError as error:
                raise ConfigError(f"stage {stage.name!r}: {error}") from error
        return jobs

    def eval_dataset(self, evaluation: EvalSet) -> str:
        if evaluation.dataset_dir is not None:
            return evaluation.dataset_dir
        return next(stage.shards_dir for stage in self.stages if stage.name == evaluation.stage)


def _dump(prepare: PrepareConfig | None) -> dict[str, Any] | None:
    return None if prepare is None else prepare.model_dump(mode="json")


@dataclass(frozen=True)
class StageAccuracy:
    stage: str
    eval_set: str
    accuracy: float
    pairs: int

    @property
    def metric(self) -> str:
        return f"stage/{self.stage}/{self.eval_set}/accuracy"


@dataclass
class StagedOutcome:
    tracking_uri: str
    parent_run_id: str
    model_dirs: dict[str, str]
    results: list[StageAccuracy]

    def table(self) -> Table:
        """Stages as rows, evaluation sets as columns: accuracy (pairs)."""
        sets = list(dict.fromkeys(result.eval_set for result in self.results))
        cells = {(r.stage, r.eval_set): f"{r.accuracy:.4f} ({r.pairs})" for r in self.results}
        return Table(
            ["stage", *sets], [[stage, *(cells[stage, s] for s in sets)] for stage in self.model_dirs]
        )


def run_stages(config: StagedJobConfig) -> StagedOutcome:
    """Train the stages in order and evaluate each stage's model on every eval set.

    Re-running skips a stage whose exported model exists (an unfinished stage resumes from its
    checkpoint), so a failed staged job continues where it stopped.
    """
    from gazerm.evaluate.offline import evaluate_split
    from gazerm.runtime import init_ray
    from gazerm.track.mlflow_tracking import MetricLogger, start_run
    from gazerm.train.job import ensure_dataset, run_training

    base = config.base
    tracking_uri = base.resolved_tracking_uri()
    jobs = config.jobs(tracking_uri)
    init_ray(base.run.num_workers * base.run.cpus_per_worker)
    for job in jobs:  # every stage's model is scored on every stage's data: prepare all of it first
        ensure_dataset(job)
    output = Path(base.output_dir).resolve()
    parent_run_id = start_run(
        tracking_uri,
        base.tracking.experiment,
        base.tracking.run_name or base.name,
        config.model_dump(mode="json"),
        str(output),
    )
    metrics = MetricLogger(tracking_uri, parent_run_id)
    outcome = StagedOutcome(tracking_uri, parent_run_id, {}, [])
    for index, (stage, job) in enumerate(zip(config.stages, jobs, strict=True)):
        model_dir = Path(job.output_dir) / MODEL_DIR
        if model_dir.exists():
            print(f"[gazerm] stage {stage.name}: skipped, its model exists at {model_dir}", flush=True)
        else:
            start = job.model.init_from or "scratch"
            print(f"[gazerm] stage {index + 1}/{len(jobs)} {stage.name}: training from {start}", flush=True)
            run_training(job, parent_run_id=parent_run_id)
        outcome.model_dirs[stage.name] = str(model_dir)
        for evaluation in config.eval_sets:
            result = evaluate_split(model_dir, config.eval_dataset(evaluation), evaluation.split)
            outcome.results.append(StageAccuracy(stage.name, evaluation.name, result.accuracy, result.pairs))
        metrics.log({r.metric: r.accuracy for r in outcome.results if r.stage == stage.name}, index + 1)
    _publish(outcome)
    return outcome


def _publish(outcome: StagedOutcome) -> None:
    from mlflow.tracking import MlflowClient

    from gazerm.track.mlflow_tracking import finish_run

    client = MlflowClient(outcome.tracking_uri)
    markdown = outcome.table().markdown()
    client.log_text(outcome.parent_run_id, markdown, TABLE_FILES[0])
    client.log_dict(outcome.parent_run_id, [asdict(r) for r in outcome.results], TABLE_FILES[1])
    finish_run(outcome.tracking_uri, outcome.parent_run_id, None, {"model_dirs": outcome.model_dirs})
    print(f"[gazerm] pairwise accuracy after each stage (pairs):\n{markdown}", flush=True)
