"""Each training worker's peak memory, estimated from the job config alone, so a job that would be killed
for memory minutes into its run is refused before it starts, with settings that fit (``gazerm plan``, the
driver's pre-flight check).

The estimate is a sum of parts in GiB. The architecture comes from building the backbone on the ``meta``
device (exact parameter counts, no weights loaded); activations are counted per layer per token from what
autograd keeps for the backward on the attention path the run takes. The constants below were measured on
a 2-core CPU node (``benchmarks/memory_calibration.py`` prints estimate against measured peak RSS); the GPU
figures (bf16, CUDA kernels) follow the same accounting but are not calibrated on a GPU.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gazerm.config import with_overrides
from gazerm.errors import ConfigError
from gazerm.model.config import ModelConfig
from gazerm.train.architecture import Architecture, architecture
from gazerm.train.config import TrainJobConfig

GIB = 2**30
# A Ray Train worker before its model: Python, torch, transformers, DeepSpeed, Ray's core worker, Ray Data
# (train/peak_memory_gib of tiny-model jobs on this machine: 0.76-0.80).
CPU_BASELINE_GIB = 0.77
GPU_BASELINE_GIB = 0.5  # CUDA context and kernels (not measured here)
NF4_BYTES = 0.5 + 4 / 64  # 4 bits a weight and an fp32 scale per block of 64 (no double quantisation)
# Resident memory over the bytes autograd keeps, at the steady-state peak (from the third step on): glibc
# keeps the blocks the backward frees, and their holes (1.62-2.14 measured here, lower with more layers).
# The caching allocator on a GPU reuses them; there only the backward's transients of one layer are added.
CPU_ALLOCATOR_FACTOR = 1.85
# Under activation checkpointing on the CPU, the share of each layer's forward temporaries (as much as the
# layer would keep without checkpointing) that stays resident anyway (0.34-0.38 measured here).
CPU_CHECKPOINT_RESIDUE = 0.35
GPU_TRANSIENT_FACTOR = 1.1
# What loading a checkpoint leaves resident beyond the fp32 weights, as a fraction of them: safetensors are
# memory-mapped and become the weights themselves (nothing more measured with a saved 106M-parameter
# directory). GGUF files are dequantised once, by the driver, into such a directory (model.backbones), so
# workers never pay the 0.57 that dequantising through numpy copies left resident.
LOADING_FACTOR = {"random": 0.0, "safetensors": 0.0}
# The LM loss keeps the log-softmax of the chosen half of the sequences (fp32) for the backward; the full
# logits and their gradient come and go before the peak (measured: one logits tensor's worth at the peak).
LM_LOGIT_COPIES = 0.5
# Listwise micro-batches hold every response of each list; the list length is the data's. Assumed: four
# (HelpSteer2 and the synthetic lists have up to four responses per prompt).
LISTWISE_RESPONSES = 4
SEQUENCES_PER_UNIT = {"pairwise": 2, "regression": 1, "listwise": LISTWISE_RESPONSES}
# Ray's memory monitor kills a worker once the node's used memory passes this fraction of its total.
RAY_MEMORY_THRESHOLD = 0.95
# The driver and Ray's own processes (GCS, raylet, dashboard, the Train controller) on the head node.
DRIVER_GIB = 2.0
TIGHT = 0.8  # above this share of what a worker has, the estimate's error (25%) reaches an OOM kill
# Linear layers that read the same tensor: under full fine-tuning (or LoRA without dropout) it is kept once.
SHARED_INPUTS = {
    **dict.fromkeys(["q_proj", "k_proj", "v_proj", "query", "key", "value"], "attention"),
    **dict.fromkeys(["gate_proj", "up_proj"], "mlp"),
}


@dataclass(frozen=True)
class MemoryEstimate:
    """One worker's peak memory in GiB, by part; ``total`` is what is compared with what a worker has."""

    baseline: float
    weights: float
    loading: float
    trainable: float
    activations: float
    backbone_params: int
    trainable_params: int
    lora_params: int
    sequences: int  # per micro-batch
    sequence_length: int  # the longest, gaze slots included
    device: str  # "cpu" (fp32) or "gpu" (bf16)
    precision: str  # of the backbone's weights: fp32, bf16, or nf4 (4-bit linear layers)

    @property
    def total(self) -> float:
        return self.baseline + self.weights + self.loading + self.trainable + self.activations

    def parts(self) -> list[tuple[str, float, str]]:
        """(part, GiB, what it holds) rows for a table."""
        gpu = self.device == "gpu"
        return [
            (
                "baseline",
                self.baseline,
                "worker process before the model" + (", CUDA context" if gpu else ""),
            ),
            ("weights", self.weights, f"{self.backbone_params:,} backbone parameters, {self.precision}"),
            ("loading", self.loading, "left resident by reading the checkpoint"),
            ("trainable", self.trainable, f"{self.trainable_params:,} trained: grads, AdamW moments, master"),
            (
                "activations",
                self.activations,
                f"{self.sequences} sequences x {self.sequence_length} tokens kept for the backward",
            ),
            ("total", self.total, ""),
        ]


@dataclass(frozen=True)
class FitReport:
    """An estimate against the memory a worker has, and overrides that would bring it under ``TIGHT`` (or
    at least under what a worker has) when it is tight or does not fit."""

    estimate: MemoryEstimate
    available_gib: float
    suggestion: dict[str, Any] | None = None  # None: fits with room, or nothing tried fits

    @property
    def share(self) -> float:
        return self.estimate.total / self.available_gib if self.available_gib > 0 else float("inf")

    @property
    def fits(self) -> bool:
        return self.share <= 1

    @property
    def tight(self) -> bool:
        return self.fits and self.share > TIGHT

    def verdict(self) -> str:
        """One line: fits, tight, or does not fit and what would."""
        needed = f"each worker needs about {self.estimate.total:.1f} of its {self.available_gib:.1f} GiB"
        if self.tight:  # the estimate is good to about 25%
            return f"tight: {needed} ({self.share:.0%}), close enough to be killed for memory" + (
                f"; {self.fix()}" if self.suggestion else ""
            )
        if self.fits:
            return f"fits: {needed} ({self.share:.0%})"
        return f"does not fit: {needed}; {self.fix()}"

    def fix(self) -> str:
        """The suggestion as the command line's ``--set`` options, or what is left when nothing tried fits."""
        if not self.suggestion:
            return (
                "no smaller micro-batch, activation checkpointing or ZeRO-3 fits: use fewer workers per "
                "node, a shorter data.max_length or a bigger node"
            )
        return "try " + " ".join(f"--set {path}={json.dumps(v)}" for path, v in self.suggestion.items())


def estimate_worker_memory(config: TrainJobConfig) -> MemoryEstimate:
    """The peak memory of one training worker of ``config``, by part (see the module's docstring)."""
    model, run = config.model, config.run
    lm_head = config.loss.lm_loss_coeff > 0
    arch = architecture(model, lm_head)
    gpu = run.use_gpu
    param_bytes = 2 if gpu else 4
    lora_params = arch.lora_params(model)
    trained = (lora_params if model.lora is not None else arch.backbone_params) + arch.head_params
    all_params = arch.backbone_params + arch.head_params + lora_params
    if run.zero_stage == 3:  # partitioned; gathered one layer (or the embedding matrix) at a time
        weights = all_params / run.num_workers + max(arch.layer_params, arch.embedding_params)
    else:
        weights = all_params
    # backward's gradients (reduced bucket by bucket under ZeRO-3) + per partition: fp32 gradients, fp32
    # master copy (DeepSpeed keeps one under fp32 too) and AdamW's two fp32 moments. Not DeepSpeed's
    # estimate_zero2/zero3_model_states_mem_needs: they count every parameter as trained (not LoRA's few),
    # assume bf16 GPU weights (not the CPU's fp32) and a 1.5 buffer factor, and the *_all_live forms print
    # rather than return.
    grads = trained * param_bytes / (run.num_workers if run.zero_stage == 3 else 1)
    optimizer = trained * 16 / run.num_workers
    sequences = run.micro_batch_size * SEQUENCES_PER_UNIT[config.loss.kind]
    length = fused_length(model, config.data.max_length)
    weight_bytes = weights * param_bytes
    if model.quantization == "nf4":  # ZeRO-2 only: bitsandbytes quantises the linear layers, not embeddings
        linear = arch.backbone_params - arch.embedding_params
        weight_bytes = linear * NF4_BYTES + (all_params - linear) * param_bytes
    return MemoryEstimate(
        baseline=GPU_BASELINE_GIB if gpu else CPU_BASELINE_GIB,
        weights=weight_bytes / GIB,
        loading=0.0 if gpu else LOADING_FACTOR[checkpoint_kind(model)] * arch.backbone_params * 4 / GIB,
        trainable=(grads + optimizer) / GIB,
        activations=activation_bytes(arch, config, sequences, length) / GIB,
        backbone_params=arch.backbone_params,
        trainable_params=trained,
        lora_params=lora_params,
        sequences=sequences,
        sequence_length=length,
        device="gpu" if gpu else "cpu",
        precision="nf4" if model.quantization == "nf4" else "bf16" if gpu else "fp32",
    )


def fused_length(model: ModelConfig, max_length: int) -> int:
    """The longest sequence the backbone reads: the text and, under concat, a gaze slot for every token
    that could have gaze (all of them at worst: the response's, and in the reference layout the prompt's
    too) and the reference layout's two separators."""
    if model.fusion != "concat":
        return max_length
    return 2 * max_length + (2 if model.gaze_layout == "reference" else 0)


def activation_bytes(arch: Architecture, config: TrainJobConfig, sequences: int, length: int) -> float:
    """Resident bytes of a micro-batch's activations at the worker's peak: what autograd keeps for the
    backward (every layer's saved tensors per token, those outside the layers, the gaze projector's and
    the LM loss's) times what the allocator holds beyond it."""
    model, gpu = config.model, config.run.use_gpu
    act = 2 if gpu else 4
    tokens, text = sequences * length, sequences * config.data.max_length
    layer = tokens * layer_bytes(arch, model, length, gpu)
    # the final norm's input, the (B, 1, S, S) additive padding mask, rotary cos/sin (decoders)
    outside = tokens * (arch.hidden + length + (0 if arch.encoder else 2 * arch.head_dim)) * act
    # the projector's hidden layer (ReLU output, dropout noise and output) and its embeddings; the reference
    # layout's two LayerNorms keep their inputs, and the second its output
    projector = 3 * model.fp_hidden + 3 * arch.hidden
    projector += model.fp_hidden + 2 * arch.hidden if model.gaze_layout == "reference" else 0
    outside += 0 if model.fusion == "none" else text * projector * act
    outside += text * LM_LOGIT_COPIES * arch.vocab * 4 if config.loss.lm_loss_coeff > 0 else 0
    factor = GPU_TRANSIENT_FACTOR if gpu else CPU_ALLOCATOR_FACTOR
    if not model.gradient_checkpointing:
        return (arch.layers * layer + outside) * factor
    # Only each layer's input is kept; the backward recomputes one layer at a time. On the CPU glibc also
    # keeps part of each layer's freed forward temporaries, in holes under that layer's kept input.
    kept = tokens * arch.layers * arch.hidden * act + layer + outside
    return kept * factor + (0 if gpu else CPU_CHECKPOINT_RESIDUE * arch.layers * layer)


def layer_bytes(arch: Architecture, model: ModelConfig, length: int, gpu: bool) -> float:
    """Bytes one transformer layer keeps per token of a ``length``-token sequence. Decoders are counted
    as Llama, Mistral or Qwen layers (RMSNorm, SwiGLU), encoders as BERT's.

    On the CPU a dropout keeps its scaled noise at full precision, on a GPU a one-byte mask. The
    attention kernels (torch's flash on the CPU, flash or memory-efficient on a GPU) keep q, k, v, the
    output and a log-sum-exp per head, not the scores; sdpa repeats K and V to all heads once a padding
    mask is present. Scores are materialised by ``eager`` attention, and on the CPU by sdpa with
    attention dropout (BERT's), which falls back to the math kernel: softmax, its dropout mask and output.
    """
    act, noise = (2, 1) if gpu else (4, 4)
    hidden, heads = arch.hidden, arch.heads
    q_width = heads * arch.head_dim
    repeated = model.attn_implementation != "flash_attention_2" and arch.kv_heads < heads
    kv_width = q_width if repeated else arch.kv_heads * arch.head_dim
    dropout_scores = arch.attention_dropout > 0 and not gpu and model.attn_implementation == "sdpa"
    if model.attn_implementation == "eager" or dropout_scores:
        scores = heads * length * act * (3 if arch.attention_dropout > 0 else 1)
        attention = (q_width + 2 * kv_width) * act + scores
    else:
        attention = (2 * q_width + 2 * kv_width) * act + heads * 4
    if arch.encoder:  # post-norm LayerNorms keep their input, mean and 1/std; dropout on both sublayers
        norms = 2 * (hidden * act + 8) + (2 * hidden * noise if arch.hidden_dropout > 0 else 0)
        mlp = arch.intermediate * act  # GELU's input
    else:  # RMSNorms keep their input (upcast to fp32) and 1/rms; SwiGLU keeps gate, its SiLU and up
        norms = 2 * (hidden * 4 + 4)
        mlp = 3 * arch.intermediate * act
    return norms + attention + mlp + trainable_linear_bytes(arch, model, act, noise)


def trainable_linear_bytes(arch: Architecture, model: ModelConfig, act: int, noise: int) -> float:
    """What a layer's trained linear layers keep per token. A frozen linear layer keeps nothing (its
    input's gradient needs only the weight). A LoRA layer keeps its dropout's noise and output (which its A
    matrix reads) and A's output; without dropout A reads the layer's input itself, kept once however many
    linear layers read it. Under full fine-tuning every linear layer's input is kept that way."""
    lora = model.lora
    if lora is None:
        trained = list(arch.layer_linears)
    else:
        trained = [x for x in arch.layer_linears if x.targeted(lora.target_modules)]
        if lora.dropout > 0:
            return sum(x.in_features * (act + noise) + lora.r * act for x in trained)
    inputs = {SHARED_INPUTS.get(x.short, x.short): x.in_features for x in trained}
    rank = 0 if lora is None else lora.r * len(trained)
    return (sum(inputs.values()) + rank) * act


def checkpoint_kind(config: ModelConfig) -> str:
    """How the backbone's weights are read: drawn at random (tiny), or from safetensors (a GGUF file's
    dequantised copy included)."""
    return "random" if config.is_tiny else "safetensors"


# -- what a worker has, and what would fit -----------------------------------------------------------------


def node_memory_gib() -> float:
    """This machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB


@dataclass(frozen=True)
class Available:
    """What one worker may use before it is killed, and how that figure was reached."""

    gib: float
    basis: str


def available_per_worker(
    config: TrainJobConfig,
    node_gib: float | None = None,
    workers_per_node: int | None = None,
    gpu_gib: float = 80.0,
) -> Available:
    """On a GPU, the GPU's memory; on the CPU, the node's memory up to Ray's memory-monitor threshold, less
    the driver's and Ray's own share, split among the node's workers (by default this node and
    ``run.num_workers``: a local run)."""
    if config.run.use_gpu:
        return Available(gpu_gib, f"one GPU of {gpu_gib:g} GiB")
    node = node_memory_gib() if node_gib is None else node_gib
    workers = workers_per_node or config.run.num_workers
    return Available(
        max(node * RAY_MEMORY_THRESHOLD - DRIVER_GIB, 0.0) / workers,
        f"{node:.1f} GiB node x {RAY_MEMORY_THRESHOLD} (Ray kills workers above) - {DRIVER_GIB:g} GiB "
        f"(driver, Ray), / {workers} workers",
    )


def check_fits(
    config: TrainJobConfig, available_gib: float, estimate: MemoryEstimate | None = None
) -> FitReport:
    """gazerm's one memory policy: the estimate against ``available_gib`` per worker, with overrides that
    fit when it does not (or only just does). ``estimate``: ``config``'s, where the caller has it."""
    estimate = estimate or estimate_worker_memory(config)
    if estimate.total <= TIGHT * available_gib:
        return FitReport(estimate, available_gib)
    suggestion = suggest(config, TIGHT * available_gib) or suggest(config, available_gib)
    return FitReport(estimate, available_gib, suggestion)


def suggest(config: TrainJobConfig, available_gib: float) -> dict[str, Any] | None:
    """Overrides that fit, trying in turn: a smaller micro-batch with more accumulation (the same global
    batch), then activation checkpointing, then ZeRO-3 (not with ``model.init_from``); the largest
    micro-batch that fits at the first step that has one. A smaller micro-batch comes with
    ``run.merge_micro_batches``: it is sized for sequences of ``data.max_length``, and merging runs a step's
    shorter ones together within that size again."""
    run, model = config.run, config.model
    steps: list[dict[str, Any]] = [{}]
    if not model.gradient_checkpointing:
        steps.append({"model.gradient_checkpointing": True})
    if run.zero_stage == 2 and not model.init_from:
        steps.append({**steps[-1], "run.zero_stage": 3})
    micro = run.micro_batch_size
    for changes in steps:
        for size in (d for d in range(micro, 0, -1) if micro % d == 0):
            batch = {"run.micro_batch_size": size, "run.grad_accum": run.grad_accum * micro // size}
            if not run.merge_micro_batches:
                batch["run.merge_micro_batches"] = True
            candidate = {**(batch if size < micro else {}), **changes}
            if candidate and estimate_worker_memory(with_overrides(config, candidate)).total <= available_gib:
                return candidate
    return None


KILLED = "a training worker ran out of memory"


@dataclass(frozen=True)
class MemoryCheck:
    """What the driver needs of the memory policy, decided once before a run starts: why the job is refused
    (it does not fit), a warning (it only just fits), and the one line to stop with if a worker is killed
    for memory all the same (``if_killed()``, worked out only then: it may search settings, estimating
    the job many times, and a cluster job's driver may not read the backbone's config)."""

    refusal: str | None
    warning: str | None
    if_killed: Callable[[], str]


def preflight(config: TrainJobConfig, local: bool) -> MemoryCheck:
    """The driver's check before it starts Ray. A ``local`` run (its workers share this machine) that does
    not fit is refused with the settings that fit, and a worker of it killed for memory gets the same
    verdict. Where the estimate says the job fits (or a cluster's nodes are not known here, and nothing is
    estimated before the run), a kill gets the same search's settings under what the estimate says a worker
    needs: the estimate was short. ``run.memory_check=false`` estimates nothing (an estimate can be wrong
    for an architecture it was not calibrated on)."""
    if not config.run.memory_check:
        unchecked = f"{KILLED} (run.memory_check=false: gazerm plan shows the estimate)"
        return MemoryCheck(None, None, lambda: unchecked)
    report = check_fits(config, available_per_worker(config).gib) if local else None
    if report is not None and not report.fits:
        verdict = report.verdict()
        refusal = f"memory: {verdict} (gazerm plan shows the estimate; run.memory_check=false skips "
        return MemoryCheck(refusal + "this check)", None, lambda: f"{KILLED}: {verdict}")
    warning = f"memory: {report.verdict()}" if report is not None and report.tight else None
    estimate = report.estimate if report is not None else None
    return MemoryCheck(None, warning, functools.partial(_killed_though_it_fits, config, estimate))


def _killed_though_it_fits(config: TrainJobConfig, estimate: MemoryEstimate | None) -> str:
    """A kill for memory where the estimate (``estimate``, or made now) said the job fits: the same search's
    settings under what the estimate says a worker needs. Without an estimate (a backbone config this
    machine cannot read), the kill alone."""
    try:
        estimate = estimate or estimate_worker_memory(config)
    except ConfigError as error:
        return f"{KILLED} (no memory estimate on this machine: {error})"
    short = check_fits(config, estimate.total, estimate)
    return f"{KILLED} though the estimate is {estimate.total:.1f} GiB; {short.fix()}"
