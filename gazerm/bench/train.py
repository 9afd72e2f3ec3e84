"""``gazerm bench train``: gazerm's training path against TRL's ``RewardTrainer`` and a plain PyTorch loop.

For each of ``max_lengths``, one dataset of pairs (with their conversations) that all fit it (neither
side truncates or drops anything) is prepared once. Then, in turn and each in its own process:

- ``gazerm``: ``gazerm train`` itself (Ray Train workers, DeepSpeed ZeRO-2, text-only fusion, each pair's
  prompt computed once unless ``pair_forward`` is ``joint``, a step's short micro-batches run together
  unless ``merge_micro_batches`` is off, the ranks dealt micro-batches alike unless ``balance_ranks``
  is off), once per ``data.packing`` setting asked for;
- ``trl`` and ``plain``: ``gazerm.bench.baselines`` (both pad);

all with the same backbone, LoRA, global batch of pairs, micro-batch and accumulation, steps, learning
rate and seed, every one training on the same tokens of the train split (in its own seeded order). The
micro-batch is ``gazerm plan``'s: the largest that fits a worker's memory, accumulated up to the global
batch; where not even one pair fits, the benchmark is refused before anything runs. Per system and case
it reports real tokens/s over the steps after ``warmup_steps`` (the first steps pay for lazy
initialisation), time from launch to the end of the first step, peak memory per training process, and
the ratios ``gazerm/trl`` and ``gazerm/plain``, with the ratio prompt sharing alone would give at
equal speed per computed token (:func:`prompt_sharing_ceiling`). gazerm's step times, per-step tokens
(``train/tokens``, every rank's) and forwards per step (``train/forwards``: fewer than its
micro-batches where ``run.merge_micro_batches`` ran short ones together) come from its MLflow run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gazerm.bench.pairs import pairwise_examples, report_invalid
from gazerm.data.config import GazeSpec, PrepareConfig, SourceSpec
from gazerm.data.errors import DataError
from gazerm.data.prepare import prepare
from gazerm.data.shards import Manifest
from gazerm.data.synthetic import readability_preferences
from gazerm.errors import ConfigError
from gazerm.model.backbones import resolve_backbone
from gazerm.model.config import LoraSettings, ModelConfig, PairForward
from gazerm.model.inputs import InputSpec, PromptResponse
from gazerm.model.pipeline import InputPipeline
from gazerm.model.prefix_sharing import pair_tokens
from gazerm.model.reward_model import build_tokenizer
from gazerm.model.templates import TemplateKind
from gazerm.table import Table
from gazerm.train.collate import UnitCollator
from gazerm.train.config import DataConfig, OptimConfig, RunConfig, TrackingConfig, TrainJobConfig
from gazerm.train.job import input_spec
from gazerm.train.kinds import LossSpec
from gazerm.train.memory import FitReport, available_per_worker, check_fits, estimate_worker_memory
from gazerm.train.units import ToUnits

System = Literal["gazerm", "trl", "plain"]
SYSTEMS: tuple[System, ...] = ("gazerm", "trl", "plain")
Packing = Literal["off", "on", "both"]
PACKINGS: dict[Packing, tuple[bool, ...]] = {"off": (False,), "on": (True,), "both": (False, True)}
# The backbone the benchmark trains by default: a real one, when its package is installed.
REAL_BACKBONE, TINY_BACKBONE = "smollm2-135m-instruct", "tiny-llama"
_EMPTY = np.zeros(0, dtype=np.float32)  # no word gaze: the benchmark is text-only
# gazerm's job needs a validation split; it is scored once, after the last measured step.
VALIDATION_SHARE, VALIDATION_PAIRS = 0.1, 32
PAIRS_FILE = "pairs.tokens.json"  # the train split's token pairs, per max_length: what the baselines train on
# Dense bf16 peak of common training GPUs, for model FLOPs utilisation (``--peak-tflops`` for others).
DENSE_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}


class TrainBench(BaseModel):
    """What every system trains: backbone, text template, token budgets, batch geometry, steps."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    backbone: str = TINY_BACKBONE
    template: TemplateKind = "plain"
    data: str | None = Field(default=None, description="a preference file; None: synthetic pairs")
    data_format: str = "generic"
    max_lengths: list[Annotated[int, Field(gt=8)]] = Field(default_factory=lambda: [256], min_length=1)
    packing: Packing = Field(default="both", description="gazerm's data.packing: off, on, or a run of each")
    pair_forward: PairForward = Field(
        default="shared", description="gazerm's model.pair_forward (the baselines run both sides in full)"
    )
    merge_micro_batches: bool = Field(
        default=True, description="gazerm's run.merge_micro_batches (the baselines run every micro-batch)"
    )
    balance_ranks: bool = Field(
        default=True,
        description="gazerm's data.balance_ranks: ranks dealt micro-batches alike wait less for "
        "each other (the baselines train in one process)",
    )
    pairs_per_step: int = Field(default=16, ge=1, description="the global batch")
    steps: int = Field(default=12, ge=2)
    warmup_steps: int = Field(default=2, ge=1)
    workers: int = Field(default=2, ge=1, description="gazerm's ranks (run.num_workers)")
    launcher: Literal["ray", "local"] = Field(default="ray", description="gazerm's run.launcher")
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
        return ModelConfig(
            backbone=self.backbone,
            fusion="none",
            lora=self.lora,
            seed=self.seed,
            pair_forward=self.pair_forward,
        )

    @property
    def train_pairs(self) -> int:
        return self.pairs_per_step * self.steps


def default_backbone() -> str:
    """The real backbone when its package is installed (its weights are dequantised once, on first use);
    else the tiny random one, with a printed note."""
    try:
        resolve_backbone(REAL_BACKBONE)
    except ConfigError as error:
        print(f"[bench] note: {error}; benchmarking {TINY_BACKBONE} (random weights) instead", flush=True)
        return TINY_BACKBONE
    return REAL_BACKBONE


@dataclass(frozen=True)
class Batching:
    """One optimizer step's pairs: ``micro`` per forward pass (per gazerm worker), ``accum`` of them."""

    micro: int
    accum: int


@dataclass(frozen=True)
class Case:
    """One token budget and gazerm's packing setting (the baselines always pad) at the batching that fits."""

    max_length: int
    packing: bool
    batching: Batching


def fitting_batching(report: FitReport, micro: int) -> Batching:
    """The micro-batch × accumulation ``gazerm plan``'s verdict on a ``micro``-pair micro-batch leads to:
    its suggested smaller micro-batch (the same pairs per step), or ``micro`` itself where that fits.
    Refused where only activation checkpointing or ZeRO-3 would fit, or nothing: every system trains
    without them."""
    suggestion = report.suggestion or {}
    if set(suggestion) - {"run.merge_micro_batches"} == {"run.micro_batch_size", "run.grad_accum"}:
        return Batching(suggestion["run.micro_batch_size"], suggestion["run.grad_accum"])
    if report.fits:
        return Batching(micro, 1)
    raise ConfigError(
        "not even one pair per micro-batch fits without activation checkpointing or ZeRO-3, which the "
        f"benchmark does not use: lower --max-length or --workers (memory: {report.verdict()})"
    )


def plan_batching(bench: TrainBench, max_length: int) -> Batching:
    """``gazerm plan`` on gazerm's job at ``max_length`` with the whole per-worker share of the global batch
    in one micro-batch, and the batching its verdict leads to (see :func:`fitting_batching`)."""
    micro = bench.pairs_per_step // bench.workers
    unplanned = Case(max_length, packing=False, batching=Batching(micro, 1))
    job = gazerm_job(bench, unplanned, Path(bench.output_dir, "data"), Path(bench.output_dir))
    report = check_fits(job, available_per_worker(job).gib)
    try:
        batching = fitting_batching(report, micro)
    except ConfigError as error:
        raise ConfigError(f"gazerm bench train at max_length {max_length}: {error}") from None
    print(
        f"[bench] max_length {max_length}, {micro} pairs per worker: {report.verdict()}: "
        f"micro-batch {batching.micro} x {batching.accum} accumulated",
        flush=True,
    )
    return batching


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
    forwards: list[int] = field(default_factory=list)  # gazerm's forwards per step (per rank)

    def tokens_per_s(self, warmup: int) -> float:
        """Real tokens of the steps after ``warmup`` over the time they took."""
        return sum(self.step_tokens[warmup:]) / (self.step_times[-1] - self.step_times[warmup - 1])

    @property
    def time_to_first_step(self) -> float:
        return self.step_times[0] - self.launched


@dataclass
class CaseRun:
    """A system's run of one case (the baselines' pad, whatever the case's packing)."""

    case: Case
    run: SystemRun


def run_train_bench(bench: TrainBench) -> dict[str, object]:
    """Plan every case's batching (refusing before anything runs where none fits), prepare each token
    budget's dataset, run every system in turn, print the table and ratios; returns them for JSON."""
    if "trl" in bench.systems:
        _require_trl()
    output = Path(bench.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    plans = {max_length: plan_batching(bench, max_length) for max_length in bench.max_lengths}
    runs, ceilings = [], {}
    for max_length, batching in plans.items():
        directory = output / f"max-length-{max_length}"
        dataset = prepare_dataset(bench, max_length, directory / "data")
        pairs = train_token_pairs(gazerm_job(bench, Case(max_length, False, batching), dataset, directory))
        (directory / PAIRS_FILE).write_text(json.dumps(pairs))
        if bench.pair_forward == "shared":
            ceilings[max_length] = prompt_sharing_ceiling(pairs)
        for system in bench.systems:
            packings = PACKINGS[bench.packing] if system == "gazerm" else (False,)
            for packing in packings:
                case = Case(max_length, packing, batching)
                print(f"[bench] {system}, {_describe(system, case)}: {bench.steps} steps …", flush=True)
                run = (
                    run_gazerm(bench, case, dataset, directory)
                    if system == "gazerm"
                    else run_baseline(bench, system, case, dataset, directory)
                )
                runs.append(CaseRun(case, run))
    return report(bench, runs, ceilings)


def _require_trl() -> None:
    try:
        import trl  # noqa: F401
    except ImportError:
        raise ConfigError(
            "the trl baseline needs TRL: pip install -e '.[bench]' (or --systems gazerm,plain)"
        ) from None


# -- the dataset -----------------------------------------------------------------------------------
def prepare_dataset(bench: TrainBench, max_length: int, directory: Path) -> Path:
    """Pairs whose chosen and rejected sides (conversation, prompt and response) both fit ``max_length``
    untruncated, as a prepared gazerm dataset (text only) with a train split of at least
    ``steps × pairs_per_step``."""
    untruncated = InputPipeline.from_spec(
        InputSpec({"predictor": "none"}, 10**9, bench.template), build_tokenizer(bench.model), bench.model
    ).encoder
    # Enough for the train split with room to spare, and a few dozen for gazerm's validation split.
    wanted = int((bench.train_pairs + VALIDATION_PAIRS) / (1 - VALIDATION_SHARE) * 1.2)
    records, seen, invalid = [], 0, []
    for context, prompt, chosen, rejected in _candidate_pairs(bench, invalid):
        seen += 1
        prefix = untruncated.template.prefix(context, prompt)
        sides = untruncated.encode([_text(prefix, chosen), _text(prefix, rejected)])
        if all(len(side["input_ids"]) <= max_length for side in sides):
            record = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
            records.append({**record, "context": context} if context else record)
        if len(records) == wanted:
            break
    if len(records) < bench.train_pairs:
        _too_few(len(records), max_length, bench)
    pairs_file = directory.parent / "pairs.jsonl"
    pairs_file.parent.mkdir(parents=True, exist_ok=True)
    pairs_file.write_text("".join(json.dumps(record) + "\n" for record in records))
    print(f"[bench] {len(records)} of {seen} pairs read fit {max_length} tokens", flush=True)
    report_invalid(invalid)
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
        _too_few(manifest.rows("train"), max_length, bench)
    return directory


def _too_few(found: int, max_length: int, bench: TrainBench) -> None:
    raise ConfigError(
        f"only {found} training pairs fit {max_length} tokens, {bench.train_pairs} are needed: "
        "raise max_length, lower steps or pairs_per_step, or add data"
    )


def _text(prefix: str, response: str) -> PromptResponse:
    return PromptResponse(prefix, response, spans=_EMPTY, features=_EMPTY)


def _candidate_pairs(bench: TrainBench, invalid: list[DataError]):
    """(context, prompt, chosen, rejected) of synthetic single-turn examples, or of ``bench.data``'s
    pairwise examples, multi-turn ones with their conversation (its invalid rows are collected in
    ``invalid``; ties are no candidates)."""
    if bench.data is None:
        for record in readability_preferences(bench.train_pairs * 4, seed=bench.seed):
            yield [], record["prompt"], record["chosen"], record["rejected"]
        return
    for item in pairwise_examples(bench.data_format, bench.data, invalid):
        pair = item.pairs[0]
        yield item.context, item.prompt, item.responses[pair.chosen], item.responses[pair.rejected]


# -- gazerm ----------------------------------------------------------------------------------------
def gazerm_job(bench: TrainBench, case: Case, dataset: Path, output: Path) -> TrainJobConfig:
    """``gazerm train``'s config for the benchmark: the same global batch over ``workers`` ranks, each
    accumulating ``case.batching``'s micro-batches."""
    return TrainJobConfig(
        name="bench-gazerm",
        output_dir=str(output / f"gazerm-packing-{_on(case.packing)}"),
        data=DataConfig(
            dataset_dir=str(dataset),
            max_length=case.max_length,
            template=bench.template,
            packing=case.packing,
            balance_ranks=bench.balance_ranks,
        ),
        model=bench.model,
        optim=OptimConfig(lr=bench.lr, scheduler="constant", warmup_ratio=0.0),
        run=RunConfig(
            launcher=bench.launcher,
            num_workers=bench.workers,
            use_gpu=bench.gpu,
            micro_batch_size=case.batching.micro,
            grad_accum=case.batching.accum,
            merge_micro_batches=bench.merge_micro_batches,
            max_steps=bench.steps,
            eval_every=bench.steps + 1,  # one evaluation, after the last measured step
            seed=bench.seed,
        ),
        tracking=TrackingConfig(
            tracking_uri=f"sqlite:///{(output / 'mlflow.db').resolve()}", experiment="bench"
        ),
    )


def run_gazerm(bench: TrainBench, case: Case, dataset: Path, output: Path) -> SystemRun:
    from mlflow.tracking import MlflowClient

    from gazerm.track.mlflow_tracking import RUN_ID_FILE

    job = gazerm_job(bench, case, dataset, output)
    name = Path(job.output_dir).name
    config_file = output / f"{name}.yaml"
    config_file.write_text(yaml.safe_dump(job.model_dump(mode="json")))
    launched = _run_logged(
        [sys.executable, "-m", "gazerm", "train", str(config_file), "--fresh"], output / f"{name}.log"
    )
    run_id = json.loads((Path(job.output_dir) / RUN_ID_FILE).read_text())["run_id"]
    client = MlflowClient(job.tracking.tracking_uri)
    steps = sorted(client.get_metric_history(run_id, "train/tokens"), key=lambda metric: metric.step)
    memory = client.get_metric_history(run_id, "train/peak_memory_gib")
    forwards = sorted(client.get_metric_history(run_id, "train/forwards"), key=lambda metric: metric.step)
    return SystemRun(
        "gazerm",
        launched,
        [metric.timestamp / 1000 for metric in steps],
        [int(metric.value) for metric in steps],
        max(metric.value for metric in memory),
        job.run.num_workers,
        estimate_worker_memory(job).backbone_params,  # counted on the meta device: no weights loaded
        [int(metric.value) for metric in forwards],
    )


def _train_shards(job: TrainJobConfig) -> list[str]:
    return Manifest.read(job.data.dataset_dir).shard_paths(job.data.dataset_dir, "train")


# -- the baselines ---------------------------------------------------------------------------------
def run_baseline(bench: TrainBench, system: System, case: Case, dataset: Path, output: Path) -> SystemRun:
    """A baseline in its own process, at gazerm's micro-batch, accumulating the whole global batch, on
    the train split's token pairs :func:`run_train_bench` wrote to ``output``."""
    spec = {
        "system": system,
        "model": bench.model.model_dump(mode="json"),
        "pairs": str(output / PAIRS_FILE),
        "pairs_per_step": bench.pairs_per_step,
        "micro_batch": case.batching.micro,
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


@dataclass(frozen=True)
class SharingCeiling:
    """gazerm/baseline where both compute a token equally fast, from the tokens each computes: gazerm each
    pair's common prefix once, the baseline both sides in full (``unpadded``), or both padded to the
    longer side (``pair_padded``: a micro-batch of one pair). Beyond it a ratio comes from the
    baseline's padding; below it, from gazerm's overheads."""

    unpadded: float
    pair_padded: float


def prompt_sharing_ceiling(pairs: list[tuple[list[int], list[int]]]) -> SharingCeiling:
    """The :class:`SharingCeiling` of the pairs every system trains on."""
    counted = sum(len(chosen) + len(rejected) for chosen, rejected in pairs)
    computed = sum(pair_tokens(chosen, rejected) for chosen, rejected in pairs)
    padded = sum(2 * max(len(chosen), len(rejected)) for chosen, rejected in pairs)
    return SharingCeiling(counted / computed, padded / computed)


def _run_logged(command: list[str], log: Path) -> float:
    """Run ``command`` with its output in ``log``; returns when it was launched (wall clock). A refusal
    (exit 2: a ``GazermError``, such as gazerm's memory check) is one line, a crash the log's end."""
    launched = time.time()
    with log.open("w") as handle:
        finished = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if finished.returncode == 0:
        return launched
    lines = log.read_text().splitlines(keepends=True)
    what = f"{' '.join(command[2:4])} failed (exit {finished.returncode})"
    refusals = [line.strip() for line in lines if line.startswith("error: ")]
    if finished.returncode == 2 and refusals:
        raise ConfigError(f"{what}: {refusals[-1].removeprefix('error: ')} (log: {log})")
    raise RuntimeError(f"{what}; end of {log}:\n{''.join(lines[-15:])}")


# -- the report ------------------------------------------------------------------------------------
def report(bench: TrainBench, runs: list[CaseRun], ceilings: dict[int, SharingCeiling]) -> dict[str, object]:
    """One row per system × max_length × packing; gazerm's rows carry its ratios to the baselines at the
    same max_length, and each max_length its :func:`prompt_sharing_ceiling` (where gazerm shares prompts)."""
    warmup = bench.warmup_steps
    peak = _peak_flops(bench) if bench.gpu else None
    rates = [entry.run.tokens_per_s(warmup) for entry in runs]
    baseline = {
        (entry.run.system, entry.case.max_length): rate
        for entry, rate in zip(runs, rates, strict=True)
        if entry.run.system != "gazerm"
    }
    header = [
        "system",
        "max length",
        "packing",
        "micro x accum",
        "tokens/s",
        "first step (s)",
        "peak GiB per process",
        "processes",
        "gazerm/trl",
        "gazerm/plain",
    ]
    rows, cases = [], []
    for entry, rate in zip(runs, rates, strict=True):
        run, case = entry.run, entry.case
        ratios = {}
        if run.system == "gazerm":
            ratios = {
                f"gazerm/{other}": rate / baseline[other, case.max_length]
                for other in ("trl", "plain")
                if (other, case.max_length) in baseline
            }
        accum = case.batching.accum * (1 if run.system == "gazerm" else bench.workers)
        row = [
            run.system,
            case.max_length,
            _on(case.packing) if run.system == "gazerm" else "pads",
            f"{case.batching.micro} x {accum}{_merged(run, warmup)}",
            f"{rate:,.0f}",
            f"{run.time_to_first_step:.1f}",
            f"{run.peak_memory_gib:.2f}",
            run.processes,
            *(f"{ratios[name]:.2f}x" if name in ratios else "" for name in ("gazerm/trl", "gazerm/plain")),
        ]
        if peak:
            row.append(f"{6 * run.parameters * rate / peak:.1%}")
        rows.append(row)
        cases.append(
            {
                **asdict(entry),
                "tokens_per_s": rate,
                "ratios": ratios,
                "prompt_sharing_ceiling": asdict(ceilings[case.max_length]) if ceilings else None,
            }
        )
    print(
        f"\n{bench.backbone}, LoRA r {bench.lora.r}, {bench.pairs_per_step} pairs/step, {bench.steps} steps "
        f"({warmup} warm-up), {'GPU' if bench.gpu else 'CPU'}, gazerm's pair_forward {bench.pair_forward}, "
        f"merge_micro_batches {str(bench.merge_micro_batches).lower()}, "
        f"balance_ranks {str(bench.balance_ranks).lower()}, launcher {bench.launcher}"
    )
    print(Table([*header, *(["MFU"] if peak else [])], rows).markdown())
    for max_length, ceiling in ceilings.items():
        print(
            f"max length {max_length}, each pair's prompt computed once: at equal speed per computed token, "
            f"gazerm/baseline {ceiling.unpadded:.2f}x against one padding nothing, "
            f"{ceiling.pair_padded:.2f}x against one padding a pair's sides to the longer (a micro-batch of "
            "one pair)"
        )
    return {"bench": bench.model_dump(mode="json"), "cases": cases}


def _on(packing: bool) -> str:
    return "on" if packing else "off"


def _merged(run: SystemRun, warmup: int) -> str:
    """``, 1.5 forwards/step``: gazerm's forwards per measured step (fewer than its micro-batches where
    they were merged)."""
    measured = run.forwards[warmup:]
    return f", {sum(measured) / len(measured):.1f} forwards/step" if measured else ""


def _describe(system: System, case: Case) -> str:
    return f"max_length {case.max_length}" + (f", packing {_on(case.packing)}" if system == "gazerm" else "")


def _peak_flops(bench: TrainBench) -> float:
    """The GPU's dense bf16 peak in FLOP/s (``peak_tflops``, or looked up from the device's name)."""
    if bench.peak_tflops:
        return bench.peak_tflops * 1e12
    name = torch.cuda.get_device_name(0)
    for model, tflops in DENSE_BF16_TFLOPS.items():
        if model in name:
            return tflops * 1e12
    raise ConfigError(f"unknown GPU {name!r}: pass --peak-tflops (its dense bf16 peak)")
