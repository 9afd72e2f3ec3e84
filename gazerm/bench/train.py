"""``gazerm bench train``: gazerm's training path against TRL's ``RewardTrainer`` and a plain PyTorch loop.

One dataset of single-turn pairs that all fit ``max_length`` (neither side truncates or drops anything)
is prepared once. Then, in turn and each in its own process:

- ``gazerm``: ``gazerm train`` itself (Ray Train workers, DeepSpeed ZeRO-2, text-only fusion);
- ``trl`` and ``plain``: ``gazerm.bench.baselines``;

all with the same backbone, LoRA, global batch of pairs, steps, learning rate and seed, every one
training on the same tokens of the train split (in its own seeded order). Per system it reports
real tokens/s over the steps after ``warmup_steps`` (the first steps pay for lazy initialisation),
time from launch to the end of the first step, peak memory per training process, and the ratios
``gazerm/trl`` and ``gazerm/plain``. gazerm's step times and per-step tokens (``train/tokens``, every
rank's) come from its MLflow run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gazerm.data.config import GazeSpec, PrepareConfig, SourceSpec
from gazerm.data.errors import DataError
from gazerm.data.prepare import prepare
from gazerm.data.schema import PreferenceExample
from gazerm.data.shards import Manifest
from gazerm.data.sources import iter_source
from gazerm.data.synthetic import readability_preferences
from gazerm.errors import ConfigError
from gazerm.model.config import LoraSettings, ModelConfig
from gazerm.model.inputs import InputSpec, PromptResponse
from gazerm.model.pipeline import InputPipeline
from gazerm.model.reward_model import build_tokenizer
from gazerm.model.templates import TemplateKind
from gazerm.table import Table
from gazerm.train.collate import UnitCollator
from gazerm.train.config import DataConfig, OptimConfig, RunConfig, TrackingConfig, TrainJobConfig
from gazerm.train.job import input_spec
from gazerm.train.kinds import LossSpec
from gazerm.train.memory import estimate_worker_memory
from gazerm.train.units import ToUnits

System = Literal["gazerm", "trl", "plain"]
SYSTEMS: tuple[System, ...] = ("gazerm", "trl", "plain")
_EMPTY = np.zeros(0, dtype=np.float32)  # no word gaze: the benchmark is text-only
# gazerm's job needs a validation split; it is scored once, after the last measured step.
VALIDATION_SHARE, VALIDATION_PAIRS = 0.1, 32
# Dense bf16 peak of common training GPUs, for model FLOPs utilisation (``--peak-tflops`` for others).
DENSE_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}


class TrainBench(BaseModel):
    """What every system trains: backbone, text template, token budget, batch geometry, steps."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    backbone: str = "tiny-llama"
    template: TemplateKind = "plain"
    data: str | None = Field(default=None, description="a preference file; None: synthetic pairs")
    data_format: str = "generic"
    max_length: int = Field(default=256, gt=8)
    pairs_per_step: int = Field(default=16, ge=1)
    steps: int = Field(default=12, ge=2)
    warmup_steps: int = Field(default=2, ge=1)
    workers: int = Field(default=2, ge=1, description="gazerm's Ray Train workers")
    lr: float = Field(default=1e-4, gt=0)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    seed: int = 0
    gpu: bool = False
    peak_tflops: float | None = Field(default=None, gt=0, description="--gpu: the GPU's dense bf16 peak")
    systems: list[System] = Field(default_factory=lambda: list(SYSTEMS))
    output_dir: str = "runs/bench-train"

    @model_validator(mode="after")
    def _geometry(self) -> TrainBench:
        if self.pairs_per_step % self.workers:
            raise ValueError(
                f"pairs_per_step ({self.pairs_per_step}) must split evenly over {self.workers} workers"
            )
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) leaves no step of {self.steps} to measure")
        return self

    @property
    def model(self) -> ModelConfig:
        return ModelConfig(backbone=self.backbone, fusion="none", lora=self.lora, seed=self.seed)

    @property
    def train_pairs(self) -> int:
        return self.pairs_per_step * self.steps


@dataclass
class SystemRun:
    """One system's run: launch time, each optimizer step's end and real tokens, its peak memory."""

    system: System
    launched: float
    step_times: list[float]
    step_tokens: list[int]
    peak_memory_gib: float
    processes: int
    parameters: int

    def tokens_per_s(self, warmup: int) -> float:
        """Real tokens of the steps after ``warmup`` over the time they took."""
        return sum(self.step_tokens[warmup:]) / (self.step_times[-1] - self.step_times[warmup - 1])

    @property
    def time_to_first_step(self) -> float:
        return self.step_times[0] - self.launched


def run_train_bench(bench: TrainBench) -> dict[str, object]:
    """Prepare the dataset, run every system in turn, print the table and ratios; returns them for JSON."""
    if "trl" in bench.systems:
        _require_trl()
    output = Path(bench.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    dataset = prepare_dataset(bench, output / "data")
    runs = {}
    for system in bench.systems:
        print(f"[bench] {system}: training {bench.steps} steps of {bench.pairs_per_step} pairs …", flush=True)
        runs[system] = (
            run_gazerm(bench, dataset, output)
            if system == "gazerm"
            else run_baseline(bench, system, dataset, output)
        )
    return report(bench, runs)


def _require_trl() -> None:
    try:
        import trl  # noqa: F401
    except ImportError:
        raise ConfigError(
            "the trl baseline needs TRL: pip install -e '.[bench]' (or --systems gazerm,plain)"
        ) from None


# -- the dataset -----------------------------------------------------------------------------------
def prepare_dataset(bench: TrainBench, directory: Path) -> Path:
    """Single-turn pairs whose chosen and rejected sides both fit ``max_length`` untruncated, as a
    prepared gazerm dataset (text only) with a train split of at least ``steps × pairs_per_step``."""
    untruncated = InputPipeline.from_spec(
        InputSpec({"predictor": "none"}, 10**9, bench.template), build_tokenizer(bench.model), bench.model
    ).encoder
    # Enough for the train split with room to spare, and a few dozen for gazerm's validation split.
    wanted = int((bench.train_pairs + VALIDATION_PAIRS) / (1 - VALIDATION_SHARE) * 1.2)
    records, seen, invalid = [], 0, []
    for prompt, chosen, rejected in _candidate_pairs(bench, invalid):
        seen += 1
        prefix = untruncated.template.prefix(None, prompt)
        sides = untruncated.encode([_text(prefix, chosen), _text(prefix, rejected)])
        if all(len(side["input_ids"]) <= bench.max_length for side in sides):
            records.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        if len(records) == wanted:
            break
    if len(records) < bench.train_pairs:
        _too_few(len(records), bench)
    pairs_file = directory.parent / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(record) + "\n" for record in records))
    print(f"[bench] {len(records)} of {seen} pairs read fit {bench.max_length} tokens", flush=True)
    if invalid:
        print(f"[bench] {len(invalid)} invalid rows left out, the first: {invalid[0]}", flush=True)
    manifest = prepare(
        PrepareConfig(
            sources=[SourceSpec(format="generic", path=str(pairs_file))],
            output_dir=str(directory),
            splits={"train": 1 - VALIDATION_SHARE, "validation": VALIDATION_SHARE},
            seed=bench.seed,
            gaze=GazeSpec(predictor="none"),
        )
    )
    if manifest.rows("train") < bench.train_pairs:
        _too_few(manifest.rows("train"), bench)
    return directory


def _too_few(found: int, bench: TrainBench) -> None:
    raise ConfigError(
        f"only {found} training pairs fit {bench.max_length} tokens, {bench.train_pairs} are needed: "
        "raise max_length, lower steps or pairs_per_step, or add data"
    )


def _text(prefix: str, response: str) -> PromptResponse:
    return PromptResponse(prefix, response, spans=_EMPTY, features=_EMPTY)


def _candidate_pairs(bench: TrainBench, invalid: list[DataError]):
    """(prompt, chosen, rejected) of single-turn examples: synthetic ones, or those of ``bench.data``
    (its invalid rows are collected in ``invalid``; ties and multi-turn examples are no candidates)."""
    if bench.data is None:
        for record in readability_preferences(bench.train_pairs * 4, seed=bench.seed):
            yield record["prompt"], record["chosen"], record["rejected"]
        return
    for item in iter_source(bench.data_format, bench.data):
        if isinstance(item, DataError):
            invalid.append(item)
        if isinstance(item, PreferenceExample) and item.pairs and not item.context:
            pair = item.pairs[0]
            yield item.prompt, item.responses[pair.chosen], item.responses[pair.rejected]


# -- gazerm ----------------------------------------------------------------------------------------
def gazerm_job(bench: TrainBench, dataset: Path, output: Path) -> TrainJobConfig:
    """``gazerm train``'s config for the benchmark: the same global batch over ``workers`` ranks."""
    return TrainJobConfig(
        name="bench-gazerm",
        output_dir=str(output / "gazerm"),
        data=DataConfig(dataset_dir=str(dataset), max_length=bench.max_length, template=bench.template),
        model=bench.model,
        optim=OptimConfig(lr=bench.lr, scheduler="constant", warmup_ratio=0.0),
        run=RunConfig(
            num_workers=bench.workers,
            use_gpu=bench.gpu,
            micro_batch_size=bench.pairs_per_step // bench.workers,
            max_steps=bench.steps,
            eval_every=bench.steps + 1,  # one evaluation, after the last measured step
            seed=bench.seed,
        ),
        tracking=TrackingConfig(
            tracking_uri=f"sqlite:///{(output / 'mlflow.db').resolve()}", experiment="bench"
        ),
    )


def run_gazerm(bench: TrainBench, dataset: Path, output: Path) -> SystemRun:
    from mlflow.tracking import MlflowClient

    from gazerm.track.mlflow_tracking import RUN_ID_FILE

    job = gazerm_job(bench, dataset, output)
    config_file = output / "gazerm.yaml"
    config_file.write_text(yaml.safe_dump(job.model_dump(mode="json")))
    launched = _run_logged(
        [sys.executable, "-m", "gazerm", "train", str(config_file), "--fresh"], output / "gazerm.log"
    )
    run_id = json.loads((Path(job.output_dir) / RUN_ID_FILE).read_text())["run_id"]
    client = MlflowClient(job.tracking.tracking_uri)
    steps = sorted(client.get_metric_history(run_id, "train/tokens"), key=lambda metric: metric.step)
    memory = client.get_metric_history(run_id, "train/peak_memory_gib")
    return SystemRun(
        "gazerm",
        launched,
        [metric.timestamp / 1000 for metric in steps],
        [int(metric.value) for metric in steps],
        max(metric.value for metric in memory),
        job.run.num_workers,
        estimate_worker_memory(job).backbone_params,  # counted on the meta device: no weights loaded
    )


def _train_shards(job: TrainJobConfig) -> list[str]:
    return Manifest.read(job.data.dataset_dir).shard_paths(job.data.dataset_dir, "train")


# -- the baselines ---------------------------------------------------------------------------------
def run_baseline(bench: TrainBench, system: System, dataset: Path, output: Path) -> SystemRun:
    pairs_file = output / "pairs.tokens.json"
    if not pairs_file.exists():
        pairs_file.write_text(json.dumps(train_token_pairs(gazerm_job(bench, dataset, output))))
    spec = {
        "system": system,
        "model": bench.model.model_dump(mode="json"),
        "pairs": str(pairs_file),
        "pairs_per_step": bench.pairs_per_step,
        "steps": bench.steps,
        "lr": bench.lr,
        "max_grad_norm": OptimConfig().max_grad_norm,
        "seed": bench.seed,
        "gpu": bench.gpu,
    }
    spec_file, result_file = output / f"{system}.spec.json", output / f"{system}.result.json"
    spec_file.write_text(json.dumps(spec))
    command = [sys.executable, "-m", "gazerm.bench.baselines", str(spec_file), str(result_file)]
    launched = _run_logged(command, output / f"{system}.log")
    return SystemRun(system, launched, **json.loads(result_file.read_text()))


def train_token_pairs(job: TrainJobConfig) -> list[tuple[list[int], list[int]]]:
    """The train split's pairs as token ids, encoded exactly as gazerm's collator encodes them."""
    rows = pa.concat_tables([pq.read_table(path) for path in _train_shards(job)])
    loss = LossSpec.of(job)
    inputs = input_spec(job, Manifest.read(job.data.dataset_dir))
    collator = UnitCollator.for_job(job, inputs, loss, build_tokenizer(job.model))
    encoded = collator.encode_units(ToUnits(loss)(rows).to_pydict())
    return [(chosen["input_ids"].tolist(), rejected["input_ids"].tolist()) for chosen, rejected in encoded]


def _run_logged(command: list[str], log: Path) -> float:
    """Run ``command`` with its output in ``log``; returns when it was launched (wall clock)."""
    launched = time.time()
    with log.open("w") as handle:
        finished = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if finished.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(
            f"{' '.join(command[2:4])} failed (exit {finished.returncode}); end of {log}:\n{tail}"
        )
    return launched


# -- the report ------------------------------------------------------------------------------------
def report(bench: TrainBench, runs: dict[System, SystemRun]) -> dict[str, object]:
    warmup = bench.warmup_steps
    rates = {system: run.tokens_per_s(warmup) for system, run in runs.items()}
    peak = _peak_flops(bench) if bench.gpu else None
    header = ["system", "tokens/s", "first step (s)", "peak memory per process (GiB)", "processes"]
    rows = []
    for system, run in runs.items():
        row = [
            system,
            f"{rates[system]:,.0f}",
            f"{run.time_to_first_step:.1f}",
            f"{run.peak_memory_gib:.2f}",
            run.processes,
        ]
        if peak:
            row.append(f"{6 * run.parameters * rates[system] / peak:.1%}")
        rows.append(row)
    print(
        f"\n{bench.backbone}, LoRA r {bench.lora.r}, {bench.pairs_per_step} pairs/step, {bench.steps} steps "
        f"({warmup} warm-up), max_length {bench.max_length}, {'GPU' if bench.gpu else 'CPU'}"
    )
    print(Table([*header, *(["MFU"] if peak else [])], rows).markdown())
    ratios = {
        f"gazerm/{other}": rates["gazerm"] / rates[other]
        for other in ("trl", "plain")
        if "gazerm" in rates and other in rates
    }
    for name, ratio in ratios.items():
        print(f"{name}: {ratio:.2f}x")
    return {
        "bench": bench.model_dump(mode="json"),
        "tokens_per_s": rates,
        "ratios": ratios,
        "runs": {system: asdict(run) for system, run in runs.items()},
    }


def _peak_flops(bench: TrainBench) -> float:
    """The GPU's dense bf16 peak in FLOP/s (``peak_tflops``, or looked up from the device's name)."""
    if bench.peak_tflops:
        return bench.peak_tflops * 1e12
    import torch

    name = torch.cuda.get_device_name(0)
    for model, tflops in DENSE_BF16_TFLOPS.items():
        if model in name:
            return tflops * 1e12
    raise ConfigError(f"unknown GPU {name!r}: pass --peak-tflops (its dense bf16 peak)")
