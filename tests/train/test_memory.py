"""The worker memory estimate: exact parameter counts, how each setting moves it, suggestions that fit,
and one measured peak within 25% (without Ray)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gazerm.config import load_config, with_overrides
from gazerm.errors import ConfigError
from gazerm.model.reward_model import build_reward_model, build_tokenizer
from gazerm.train import memory
from gazerm.train.config import TrainJobConfig
from gazerm.train.memory import Available, check_fits, estimate_worker_memory, preflight

ROOT = Path(__file__).resolve().parents[2]
# A tiny-llama wide enough that activations are a good part of a worker's memory, quick to train.
MEASURED = {
    "model.tiny.hidden_size": 576,
    "model.tiny.num_heads": 9,
    "model.tiny.num_kv_heads": 3,
    "model.tiny.intermediate_size": 1536,
    "model.tiny.num_layers": 4,
    "run.micro_batch_size": 2,
}


def job(*overrides: dict[str, Any]) -> TrainJobConfig:
    """The default job with each mapping of overrides applied in turn (a later one wins)."""
    return load_config(TrainJobConfig, {}, {path: v for part in overrides for path, v in part.items()})


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"loss.lm_loss_coeff": 0.5, "model.lora.r": 4, "model.lora.target_modules": ["q_proj", "gate_proj"]},
        {"model.lora": None, "model.implicit_features": True},
        {
            "model.backbone": "tiny-bert",
            "model.lora.target_modules": ["query", "key", "value"],
            "model.fusion": "add",
        },
        {"model.gaze_layout": "reference"},
    ],
    ids=["lora", "lm-head", "full", "encoder", "reference"],
)
def test_parameter_counts_are_the_built_models(overrides: dict[str, Any]):
    config = job(overrides)
    model = build_reward_model(config.model, build_tokenizer(config.model), config.loss.lm_loss_coeff > 0)
    estimate = estimate_worker_memory(config)
    named = dict(model.named_parameters())
    lora = sum(p.numel() for name, p in named.items() if "lora_" in name)
    backbone = sum(p.numel() for name, p in model.backbone.named_parameters() if "lora_" not in name)
    assert (estimate.lora_params, estimate.backbone_params) == (lora, backbone)
    assert estimate.trainable_params == sum(p.numel() for p in named.values() if p.requires_grad)


def test_zero3_partitions_the_weights_across_workers():
    def weights(overrides: dict[str, Any]) -> float:
        return estimate_worker_memory(job(MEASURED, overrides)).weights

    assert weights({"run.zero_stage": 2, "run.num_workers": 2}) == weights(
        {"run.zero_stage": 2, "run.num_workers": 8}
    )
    two, eight = (
        weights({"run.zero_stage": 3, "run.num_workers": 2}),
        weights({"run.zero_stage": 3, "run.num_workers": 8}),
    )
    assert eight < two < weights({"run.zero_stage": 2, "run.num_workers": 2})


def test_checkpointing_cuts_activations_and_concat_doubles_the_sequence():
    plain = estimate_worker_memory(job(MEASURED, {"model.fusion": "none"}))
    concat = estimate_worker_memory(job(MEASURED, {"model.fusion": "concat"}))
    checkpointed = estimate_worker_memory(
        job(MEASURED, {"model.fusion": "none", "model.gradient_checkpointing": True})
    )
    assert concat.sequence_length == 2 * plain.sequence_length == 2 * 128
    assert 2 <= concat.activations / plain.activations < 2.3  # the padding mask grows with the square
    assert checkpointed.activations < plain.activations / 2
    reference = estimate_worker_memory(
        job(MEASURED, {"model.fusion": "concat", "model.gaze_layout": "reference"})
    )
    assert reference.sequence_length == concat.sequence_length + 2  # <eye/> and </eye>
    assert reference.activations > concat.activations
    assert (
        plain.sequences == 4
        and estimate_worker_memory(job(MEASURED, {"loss.kind": "regression"})).sequences == 2
    )


def test_a_job_that_does_not_fit_gets_overrides_that_fit_with_the_same_global_batch():
    config = job(MEASURED, {"run.micro_batch_size": 16, "run.grad_accum": 2})
    needed = estimate_worker_memory(config).total
    report = check_fits(config, available_gib=needed * 0.6)
    assert not report.fits and report.suggestion
    fixed = with_overrides(config, report.suggestion)
    assert estimate_worker_memory(fixed).total <= needed * 0.6
    assert fixed.run.micro_batch_size * fixed.run.grad_accum == 32
    # the smaller micro-batch is sized for max_length; merging lets shorter ones fill it again
    assert fixed.run.merge_micro_batches and "--set run.merge_micro_batches=true" in report.verdict()
    assert "--set run.micro_batch_size=" in report.verdict()
    merging = with_overrides(config, {"run.merge_micro_batches": True})
    assert "run.merge_micro_batches" not in check_fits(merging, available_gib=needed * 0.6).suggestion

    hopeless = check_fits(config, available_gib=0.5)
    assert not hopeless.fits and hopeless.suggestion is None and "bigger node" in hopeless.verdict()


def _worker_has(monkeypatch: pytest.MonkeyPatch, gib: float) -> None:
    monkeypatch.setattr("gazerm.train.memory.available_per_worker", lambda _: Available(gib, ""))


def test_preflight_warns_when_tight_and_refuses_what_does_not_fit(monkeypatch: pytest.MonkeyPatch):
    config = job(MEASURED, {"run.micro_batch_size": 8})
    needed = estimate_worker_memory(config).total
    _worker_has(monkeypatch, needed * 10)
    assert preflight(config, local=True).refusal is preflight(config, local=True).warning is None
    _worker_has(monkeypatch, needed / 0.9)
    assert preflight(config, local=True).warning.startswith("memory: tight")
    _worker_has(monkeypatch, needed * 0.6)
    refusal = preflight(config, local=True).refusal
    assert refusal.startswith("memory: does not fit") and "--set run.micro_batch_size=" in refusal
    assert preflight(config, local=False).refusal is None  # a cluster's nodes are not this machine


def test_a_kill_for_memory_gets_the_preflights_answer(monkeypatch: pytest.MonkeyPatch):
    """One policy: where the job does not fit, a worker killed for memory (memory_check=false let it start)
    is told the very settings the preflight refuses it with; where the estimate said it fits, the same
    search under the estimate."""
    config = job(MEASURED, {"run.micro_batch_size": 8, "run.grad_accum": 2})
    needed = estimate_worker_memory(config).total
    _worker_has(monkeypatch, needed * 0.6)
    check = preflight(config, local=True)
    verdict = check_fits(config, needed * 0.6).verdict()
    assert check.refusal.startswith(f"memory: {verdict} (")
    assert check.if_killed() == f"a training worker ran out of memory: {verdict}"

    _worker_has(monkeypatch, needed * 10)
    fits = preflight(config, local=True)
    under = check_fits(config, needed).suggestion  # settings estimated to need less than the job
    assert fits.refusal is None and under["run.micro_batch_size"] * under["run.grad_accum"] == 16
    assert estimate_worker_memory(with_overrides(config, under)).total < needed
    assert fits.if_killed() == (
        f"a training worker ran out of memory though the estimate is {needed:.1f} GiB; try "
        + " ".join(f"--set {path}={json.dumps(value)}" for path, value in under.items())
    )
    assert preflight(config, local=False).if_killed() == fits.if_killed()
    unchecked = preflight(job(MEASURED, {"run.memory_check": False}), local=True)
    assert (unchecked.refusal, unchecked.warning, unchecked.if_killed()) == (
        None,
        None,
        "a training worker ran out of memory (run.memory_check=false: gazerm plan shows the estimate)",
    )


def test_a_cluster_job_is_estimated_only_when_a_worker_is_killed(monkeypatch: pytest.MonkeyPatch):
    """The driver of a cluster job estimates nothing before the run (its nodes are not this machine), so a
    backbone config it cannot read (gated, offline) does not stop a job the workers can run; a local job is
    estimated once."""
    config = job(MEASURED)
    estimated = []
    real = memory.estimate_worker_memory
    monkeypatch.setattr(memory, "estimate_worker_memory", lambda c: estimated.append(c) or real(c))
    _worker_has(monkeypatch, real(config).total * 10)
    local = preflight(config, local=True)
    remote = preflight(config, local=False)
    assert len(estimated) == 1
    assert remote.if_killed() == local.if_killed()

    def unreadable(_: TrainJobConfig):
        raise ConfigError("model.backbone='org/gated': its config cannot be read: 401")

    monkeypatch.setattr(memory, "estimate_worker_memory", unreadable)
    remote = preflight(config, local=False)
    assert remote.refusal is remote.warning is None
    assert remote.if_killed() == (
        "a training worker ran out of memory (no memory estimate on this machine: "
        "model.backbone='org/gated': its config cannot be read: 401)"
    )


def test_a_process_peak_is_its_own_not_its_parents():
    """``ru_maxrss`` survives exec: a process started from a large one (this test session) read the
    parent's size as its own peak. The peak in MLflow and the benchmarks is the process's own."""
    ballast = b"\x01" * 2**30  # touched pages: this process is now over 1 GiB resident
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import torch; from gazerm.train.metrics import peak_memory_gib as p; "
            "print(p(torch.device('cpu')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(ballast) == 2**30
    assert 0.05 < float(child.stdout) < 0.9, child.stdout


@pytest.mark.slow  # trains in a fresh process (~15 s)
def test_the_estimate_is_within_a_quarter_of_a_measured_peak():
    """A real forward, backward and AdamW step under DeepSpeed in a fresh process (the calibration
    benchmark's measurement), against the estimate for one worker."""
    overrides = MEASURED | {"model.fusion": "concat"}
    settings = [f"{path}={json.dumps(value)}" for path, value in overrides.items()]  # its --measure strings
    command = [sys.executable, "benchmarks/memory_calibration.py", "--measure", json.dumps(settings)]
    done = subprocess.run([*command, "--steps", "3"], cwd=ROOT, capture_output=True, text=True, check=True)
    measured = float(done.stdout.split("PEAK ")[-1])
    estimate = estimate_worker_memory(job({"run.num_workers": 1}, overrides))
    assert estimate.activations > 0.25 * estimate.total  # the part that is calibrated, not just the baseline
    assert 0.75 <= estimate.total / measured <= 1.25, (estimate.total, measured)
