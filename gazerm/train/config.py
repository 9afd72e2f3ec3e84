"""The training job's typed config. Its defaults *are* the quickstart job (``jobs/quickstart.yaml``):
a tiny random-init Llama trained on the synthetic readability set with 2 CPU workers and ZeRO-2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    ModelWrapValidatorHandler,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from gazerm.config import OutputDir, StrictConfig, left_to_switch
from gazerm.data.config import GazeSpec, PrepareConfig, SourceSpec
from gazerm.errors import ConfigError
from gazerm.features.featurize import unused_features_problem
from gazerm.model.config import LossConfig, ModelConfig
from gazerm.model.templates import TemplateKind
from gazerm.storage import is_object_store
from gazerm.train.metric_names import DEFAULT_METRIC, KIND_METRICS

QUICKSTART_DATA = "runs/data/readability.jsonl"


def _quickstart_prepare() -> PrepareConfig:
    return PrepareConfig(
        sources=[SourceSpec(format="generic", path=QUICKSTART_DATA)],
        output_dir="runs/data/readability",
        rows_per_shard=500,
        splits={"train": 0.8, "validation": 0.2, "test": 0.0},
        gaze=GazeSpec(predictor="reading_model", backend="auto", workers=2),
    )


class DataConfig(StrictConfig):
    """Where shards come from: an already prepared ``dataset_dir``, or a ``prepare`` section run first.

    ``synthetic_rows`` makes the quickstart self-contained: when the first source is the
    quickstart JSONL and it does not exist yet, that many synthetic pairs are written first.
    """

    dataset_dir: str | None = None
    prepare: PrepareConfig | None = Field(default_factory=_quickstart_prepare)
    synthetic_rows: int = Field(default=1200, ge=0)
    max_length: int = Field(default=128, gt=8)
    bucket_window: int = Field(default=8, ge=1, description="micro-batches sorted by length together")
    template: TemplateKind = Field(
        default="plain",
        description="'chat': the tokenizer's chat template (instruct backbones); 'reference_chat': what the "
        "paper's reference code reads (gazerm.model.templates): that template, or ChatML with its two tokens "
        "where the tokenizer has none (Llama-3 base), with the tokenizer's BOS on top",
    )
    shuffle_buffer: int = Field(
        default=10_000, ge=1, description="units each rank shuffles together (after a seeded block order)"
    )
    balance_ranks: bool = Field(
        default=False,
        description="every rank reads and tokenizes each window of all ranks' units and takes a hand dealt "
        "in rounds by the tokens the forward computes, so the ranks' micro-batches are alike and fewer wait "
        "for another at a gradient exchange; costs every rank the tokenizing of all ranks' units (off: each "
        "rank reads and tokenizes only its own share)",
    )
    packing: bool = Field(
        default=False,
        description="padding-free forwards: a micro-batch's sequences run back to back, position ids "
        "restarting per sequence (one row for flash_attention_2's varlen kernel; for sdpa/eager rows no "
        "longer than the padded ones); causal decoders only",
    )

    @model_validator(mode="after")
    def _one_origin(self) -> DataConfig:
        # Prepared shards replace the default (quickstart) prepare section without a `prepare: null`.
        if self.dataset_dir is not None and self.prepare == _quickstart_prepare():
            self.prepare = None
        if (self.dataset_dir is None) == (self.prepare is None):
            raise ValueError("set exactly one of data.dataset_dir (prepared shards) or data.prepare")
        return self

    @property
    def shards_dir(self) -> str:
        return self.dataset_dir or self.prepare.output_dir


class OptimConfig(StrictConfig):
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1, description="cosine floor as a fraction of lr")
    max_grad_norm: float = Field(default=1.0, gt=0)
    schedule_horizon: Literal["trained", "full_batches"] = Field(
        default="trained",
        description="the steps the schedule spans: those the run trains, or 'full_batches': train units // "
        "(micro_batch_size x num_workers) x epochs, leaving out each epoch's short last batch and, as the "
        "reference (n // batch_size x epochs, past which its cosine rises again), blind to grad_accum; "
        "run.max_steps: those",
    )


class RunConfig(StrictConfig):
    launcher: Literal["ray", "local"] = Field(
        default="ray",
        description="ray: the ranks as Ray Train workers (a local Ray, or the cluster's under ray job "
        "submit); local: num_workers processes on this machine started by torch's elastic launcher "
        "(torchrun's) in Ray Train's local mode, no Ray to start: the first step comes seconds sooner",
    )
    num_workers: int = Field(default=2, ge=1)
    cpus_per_worker: float = Field(default=1, gt=0)
    use_gpu: bool = False
    zero_stage: Literal[2, 3] = 2
    micro_batch_size: int = Field(default=16, ge=1, description="pairs per worker per step")
    grad_accum: int = Field(default=1, ge=1)
    merge_micro_batches: bool = Field(
        default=False,
        description="run a step's micro-batches as the fewest forwards whose padded tokens stay within one "
        "micro-batch at data.max_length (what gazerm plan sizes memory for): short sequences then fill "
        "bigger forwards; the step's gradient is the same (the LM loss's token mean spans a forward)",
    )
    epochs: int = Field(default=2, ge=1)
    max_steps: int | None = Field(default=None, ge=1, description="optimizer steps; overrides epochs")
    eval_every: int = Field(default=20, ge=1, description="optimizer steps between evaluations + checkpoints")
    final_eval: bool = Field(
        default=True,
        description="evaluate after the last step too; false: only every eval_every steps (as a transformers "
        "Trainer does), the last step's weights then checkpointed without validation metrics",
    )
    keep_checkpoints: int = Field(default=2, ge=1)
    max_failures: int = Field(
        default=3,
        ge=-1,
        description="restarts of the worker group from the latest checkpoint after a worker or node "
        "loss; -1: no limit",
    )
    seed: int = Field(default=0, ge=0)
    select: Literal["last", "best"] = Field(
        default="last",
        description="the model the run exports and tests: the last evaluation's weights, or those of the "
        "evaluation best by select_metric",
    )
    select_metric: str = Field(default=DEFAULT_METRIC, pattern=r"^val/", description="a val/ metric")
    select_mode: Literal["max", "min"] = "max"
    select_ties: Literal["later", "earlier"] = Field(
        default="later",
        description="which of two evaluations with the same select_metric is best: the later, or 'earlier' "
        "(a later one must be strictly better, as a transformers Trainer's load_best_model_at_end)",
    )
    accuracy_ties: Literal["half", "correct"] = Field(
        default="half",
        description="what a tie of the rewards counts as in validation and test accuracy: half right, or "
        "'correct' (trl's compute_accuracy: argmax picks the chosen response of a tie)",
    )
    memory_check: bool = Field(
        default=True,
        description="estimate each worker's peak memory before a local run starts and refuse a job that "
        "does not fit (gazerm plan shows the estimate); false: skip",
    )

    @property
    def tie_credit(self) -> float:
        """What a tie of the rewards adds to an accuracy's count of right orderings (``accuracy_ties``)."""
        return 1.0 if self.accuracy_ties == "correct" else 0.5

    def improves(self, value: float, best: float | None) -> bool:
        """Whether an evaluation scoring ``value`` on ``select_metric`` replaces the best so far."""
        if best is None:
            return True
        if value == best:
            return self.select_ties == "later"
        return value > best if self.select_mode == "max" else value < best


class TrackingConfig(StrictConfig):
    """MLflow; ``tracking_uri=None`` means a local sqlite store beside the run's output directory."""

    tracking_uri: str | None = None
    experiment: str = "gazerm"
    run_name: str | None = None


# What ``model.fidelity: reference`` sets in the run's other sections where the config leaves a field out:
# the reference's selection and schedule (trl 0.9.6's RewardTrainer on a transformers 4.40 Trainer, its
# README's --logging_steps 64, its cosine_scheduler_with_min_lr_ratio over n // batch_size x epochs).
REFERENCE_RUN_DEFAULTS = {
    "run": {
        "eval_every": 64,
        "final_eval": False,
        "select": "best",
        "select_metric": "val/accuracy",
        "select_mode": "max",
        "select_ties": "earlier",
        "accuracy_ties": "correct",
    },
    "optim": {"schedule_horizon": "full_batches"},
}


class TrainJobConfig(StrictConfig):
    """A training job: data, model, loss, optimiser, run and tracking.

    ``model.fidelity`` is a model field (a saved model keeps it) while selection and schedule are the
    run's, so the switch reaches them here: under ``reference`` every field of ``REFERENCE_RUN_DEFAULTS``
    the ``run:`` and ``optim:`` sections leave out takes the reference's value, as ``ModelConfig`` does
    for its own fields, and a dump for overrides leaves such fields out the same way (``left_to_switch``).
    """

    name: str = "quickstart"
    output_dir: OutputDir = "runs/quickstart"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="wrap")
    @classmethod
    def _fidelity_defaults(
        cls, data: Any, handler: ModelWrapValidatorHandler[TrainJobConfig]
    ) -> TrainJobConfig:
        """Fill the sections' fields ``model.fidelity: reference`` implies, kept out of each section's
        ``model_fields_set`` as ``ModelConfig`` keeps its own."""
        filled: dict[str, dict[str, Any]] = {}
        if isinstance(data, dict) and _fidelity(data.get("model")) == "reference":
            data = dict(data)
            for section, defaults in REFERENCE_RUN_DEFAULTS.items():
                given = data.get(section) or {}
                if isinstance(given, StrictConfig):
                    filled[section] = {k: v for k, v in defaults.items() if k not in given.model_fields_set}
                    data[section] = given.model_copy(update=filled[section])
                else:
                    filled[section] = {k: v for k, v in defaults.items() if k not in given}
                    data[section] = {**given, **filled[section]}
        config = handler(data)
        for section, names in filled.items():
            getattr(config, section).__pydantic_fields_set__ -= names.keys()
        return config

    @model_serializer(mode="wrap")
    def _for_overrides(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        data = handler(self)
        for section, defaults in REFERENCE_RUN_DEFAULTS.items():
            data[section] = left_to_switch(data[section], getattr(self, section), defaults, info)
        return data

    @model_validator(mode="after")
    def _select_metric_the_loss_reports(self) -> TrainJobConfig:
        """``run.select: best`` (``model.fidelity: reference``'s default) ranks by a metric the loss kind
        must report: else the first evaluation would fail, hours into a run."""
        reported = KIND_METRICS[self.loss.kind]
        if self.run.select == "best" and self.run.select_metric.rsplit("/", 1)[-1] not in reported:
            named = ", ".join(f"val/{name}" for name in reported)
            raise ValueError(
                f"run.select_metric={self.run.select_metric!r}: a {self.loss.kind} loss reports {named}; "
                "set run.select_metric to one of them (and run.select_mode: min for an error or a loss)"
            )
        return self

    @model_validator(mode="after")
    def _init_from_needs_zero2(self) -> TrainJobConfig:
        if self.model.init_from and self.run.zero_stage == 3:
            raise ValueError(
                "model.init_from copies full weights in before DeepSpeed shards them: use run.zero_stage=2"
            )
        return self

    @model_validator(mode="after")
    def _qlora_on_gpus_under_zero2(self) -> TrainJobConfig:
        if self.model.quantization == "nf4" and not (self.run.use_gpu and self.run.zero_stage == 2):
            raise ValueError(
                "model.quantization=nf4 trains on GPUs (bitsandbytes 4-bit kernels) under ZeRO-2 (ZeRO-3 "
                "cannot partition 4-bit weights): set run.use_gpu=true and run.zero_stage=2"
            )
        return self

    @model_validator(mode="after")
    def _features_the_predictor_gives(self) -> TrainJobConfig:
        # Prepared shards (data.dataset_dir) are checked against their manifest when the job starts.
        if self.data.prepare is not None:
            problem = self.features_problem(self.data.prepare.gaze.predictor)
            if problem:
                raise ValueError(problem)
        return self

    def features_problem(self, predictor: str) -> str | None:
        """Why ``model.features_used`` does not fit gaze from ``predictor`` (fmv1 gives TRT only), or None."""
        if self.model.fusion == "none":
            return None
        return unused_features_problem(predictor, self.model.features_used)

    @model_validator(mode="after")
    def _packing_needs_a_decoder(self) -> TrainJobConfig:
        if self.data.packing and (why := self.model.slots_cannot_move()):
            raise ValueError(f"data.packing {why}")
        return self

    def resolved_tracking_uri(self) -> str:
        if self.tracking.tracking_uri:
            return self.tracking.tracking_uri
        if is_object_store(self.output_dir):
            raise ConfigError("output_dir is remote storage: set tracking.tracking_uri to an MLflow server")
        root = Path(self.output_dir).resolve().parent
        root.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{root / 'mlflow.db'}"


def _fidelity(model: Any) -> str | None:
    """``model.fidelity`` of a model section given as a dict or a ModelConfig."""
    return model.fidelity if isinstance(model, ModelConfig) else (model or {}).get("fidelity")
