"""The worker memory estimate (``gazerm.train.memory``, ``gazerm plan``) against measured peak memory.

    python benchmarks/memory_calibration.py [--steps 4] [--only NAME ...]

Each case runs in a fresh subprocess that imports what a training worker imports (DeepSpeed, Ray Train,
gazerm's training loop), builds the real reward model with ``build_reward_model``, wraps it in DeepSpeed
with the job's ZeRO config (one process, gloo) and trains ``--steps`` steps (forward, backward, AdamW) of
the pairwise loss on random token ids at full length, gaze on every token (so ``concat`` doubles each
sequence) and the last row a little shorter (so attention gets a padding mask, as real batches do). The
process's peak RSS (``VmHWM``, as ``train/peak_memory_gib`` reads it) is printed against the estimate for
one worker; from the third step on the peak no longer grows (the allocator's footprint has settled), so the
default is four steps.
The real-backbone cases need the smollm2 extra (README: pretrained backbones) and take minutes each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPE = [  # a tiny-llama with SmolLM2's layer shape, so activations dominate its footprint
    "model.tiny.hidden_size=576",
    "model.tiny.num_heads=9",
    "model.tiny.num_kv_heads=3",
    "model.tiny.intermediate_size=1536",
]
SMOLLM2 = ["model.backbone=smollm2-135m-instruct"]
CASES = {
    "tiny-llama 8 layers, 2 pairs x 96, concat": [
        *SHAPE,
        "model.tiny.num_layers=8",
        "run.micro_batch_size=2",
        "data.max_length=96",
    ],
    "tiny-llama 8 layers, 8 pairs x 128, concat": [
        *SHAPE,
        "model.tiny.num_layers=8",
        "run.micro_batch_size=8",
    ],
    "tiny-llama 4 layers, 8 pairs x 384": [
        *SHAPE,
        "model.tiny.num_layers=4",
        "model.fusion=none",
        "run.micro_batch_size=8",
        "data.max_length=384",
    ],
    "tiny-llama 8 layers, full fine-tuning": [
        *SHAPE,
        "model.tiny.num_layers=8",
        "model.lora=null",
        "run.micro_batch_size=2",
        "data.max_length=96",
    ],
    "tiny-llama 8 layers, 4 pairs x 128, concat, checkpointing": [
        *SHAPE,
        "model.tiny.num_layers=8",
        "model.gradient_checkpointing=true",
        "run.micro_batch_size=4",
    ],
    "smollm2, 2 pairs x 128": [*SMOLLM2, "model.fusion=none", "run.micro_batch_size=2"],
    "smollm2, 2 pairs x 64, concat": [*SMOLLM2, "run.micro_batch_size=2", "data.max_length=64"],
    "smollm2, 2 pairs x 128, LM loss": [
        *SMOLLM2,
        "model.fusion=none",
        "loss.lm_loss_coeff=0.5",
        "run.micro_batch_size=2",
    ],
    "smollm2, 4 pairs x 128, concat, checkpointing": [
        *SMOLLM2,
        "model.gradient_checkpointing=true",
        "run.micro_batch_size=4",
    ],
}
DEFAULTS = ["run.num_workers=1", "data.max_length=128"]  # one process: the measurement is one worker


def job_config(overrides: list[str]):
    from gazerm.config import load_config, parse_overrides
    from gazerm.train.config import TrainJobConfig

    return load_config(TrainJobConfig, {}, parse_overrides([*DEFAULTS, *overrides]))


def measure(overrides: list[str], steps: int) -> float:
    """Peak RSS in GiB of ``steps`` training steps of the job, in this (fresh) process."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import ray.train  # noqa: F401  (a worker's imports, for its baseline)
    import torch

    import gazerm.train.loop  # noqa: F401
    from gazerm.model.losses import pairwise_loss
    from gazerm.model.reward_model import build_reward_model, build_tokenizer
    from gazerm.runtime import free_port
    from gazerm.train.deepspeed_config import deepspeed_config, skip_compiled_ops
    from gazerm.train.metrics import peak_memory_gib

    config = job_config(overrides)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1"
    )
    torch.distributed.init_process_group("gloo")
    skip_compiled_ops()  # as the training workers do
    torch.manual_seed(0)
    tokenizer = build_tokenizer(config.model)
    lm = config.loss.lm_loss_coeff > 0
    model = build_reward_model(config.model, tokenizer, lm_head=lm)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=deepspeed_config(config, bf16=False)
    )
    pairs, length = config.run.micro_batch_size, config.data.max_length
    ids = torch.randint(5, len(tokenizer), (2 * pairs, length))
    mask = torch.ones_like(ids)
    mask[-1, -3:] = 0
    gaze = torch.rand(2 * pairs, length, 5)
    engine.train()  # as the training loop does: from_pretrained leaves a backbone in eval mode
    for _ in range(steps):
        output = engine(ids, mask, gaze, mask.bool(), return_lm_logits=lm)
        loss = pairwise_loss(output.rewards[:pairs], output.rewards[pairs:])
        if lm:
            from gazerm.model.losses import lm_loss

            language = lm_loss(output.lm_logits[:pairs], ids[:pairs], mask[:pairs].bool())
            loss = loss + config.loss.lm_loss_coeff * language
        del output
        engine.backward(loss)
        engine.step()
    return peak_memory_gib(torch.device("cpu"))


def measured_in_subprocess(overrides: list[str], steps: int) -> float:
    command = [sys.executable, __file__, "--measure", json.dumps(overrides), "--steps", str(steps)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("PEAK ")]
    if done.returncode or not lines:
        raise RuntimeError(f"measuring {overrides} failed:\n{done.stderr[-3000:]}")
    return float(lines[-1].split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--only", nargs="*", help="case names (substrings) to run; default: all")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the subprocess: JSON list of overrides
    args = parser.parse_args()
    if args.measure:
        print(f"PEAK {measure(json.loads(args.measure), args.steps)}")
        return

    from gazerm.table import Table
    from gazerm.train.memory import estimate_worker_memory

    rows = []
    for name, overrides in CASES.items():
        if args.only and not any(part in name for part in args.only):
            continue
        estimate = estimate_worker_memory(job_config(overrides)).total
        measured = measured_in_subprocess(overrides, args.steps)
        rows.append([name, f"{estimate:.2f}", f"{measured:.2f}", f"{estimate / measured:.2f}"])
        print(
            f"{name}: estimate {estimate:.2f} GiB, measured {measured:.2f} GiB", file=sys.stderr, flush=True
        )
    print(Table(["case", "estimate GiB", "measured GiB", "estimate / measured"], rows).markdown(), end="")


if __name__ == "__main__":
    main()
