"""The DeepSpeed config a run needs, derived from the typed job config (never hand-written JSON)."""

from __future__ import annotations

import os
from typing import Any

from gazerm.train.config import TrainJobConfig


def choose_accelerator(use_gpu: bool) -> None:
    """Tell DeepSpeed which accelerator to use (unless the environment already does). It must come before
    DeepSpeed is imported: DeepSpeed picks its accelerator once, at import."""
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if use_gpu else "cpu")


def deepspeed_config(config: TrainJobConfig, bf16: bool) -> dict[str, Any]:
    """ZeRO stage 2 or 3 with the job's batch sizes and clipping.

    The optimizer and scheduler are built by gazerm (torch AdamW + a transformers schedule)
    and handed to ``deepspeed.initialize``, so the same code runs on CPU (gloo, fp32) and GPU
    (NCCL, bf16) without DeepSpeed's fused CUDA optimizers.
    """
    run = config.run
    zero: dict[str, Any] = {"stage": run.zero_stage, "overlap_comm": False, "contiguous_gradients": True}
    if run.zero_stage == 3:
        zero.update(
            {"stage3_gather_16bit_weights_on_model_save": True, "stage3_param_persistence_threshold": 0}
        )
    return {
        "train_micro_batch_size_per_gpu": run.micro_batch_size,
        "gradient_accumulation_steps": run.grad_accum,
        "train_batch_size": run.micro_batch_size * run.grad_accum * run.num_workers,
        "gradient_clipping": config.optim.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def skip_compiled_ops() -> None:
    """Tell DeepSpeed that none of its compiled (JIT-built) ops is available, before it starts.

    On every start DeepSpeed's communication backend probes every op builder it knows (compiler
    subprocesses, accelerator queries) and builds its shared-memory all-reduce kernel: loaded from
    ``~/.cache/torch_extensions`` when built before, compiled from C++ otherwise (minutes on 2 busy
    cores, and by every new machine, container or CI runner). gazerm's training uses none of them:
    torch's AdamW, no offload, and that kernel serves only tensor-parallel inference
    (``inference_all_reduce``), so gradients go through ``torch.distributed`` (gloo, NCCL) either way.
    ``deepspeed.ops.__compatible_ops__`` is where DeepSpeed records the probe; it reads it only there.
    """
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__ = {}
