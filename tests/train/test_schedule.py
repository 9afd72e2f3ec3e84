from __future__ import annotations

from itertools import pairwise

import pytest
import torch

from gazerm.train.config import TrainJobConfig
from gazerm.train.deepspeed_config import deepspeed_config
from gazerm.train.job import planned_steps
from gazerm.train.order import Block, EpochPlan
from gazerm.train.schedule import build_scheduler

LR = 1e-3


def job(**sections) -> TrainJobConfig:
    return TrainJobConfig.model_validate(sections)


def learning_rates(config: TrainJobConfig, total_steps: int) -> list[float]:
    """The learning rate of each optimizer step 0…total_steps, as DeepSpeed steps the schedule."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.optim.lr)
    scheduler = build_scheduler(optimizer, config, total_steps)
    rates = [scheduler.get_last_lr()[0]]
    for _ in range(total_steps):
        optimizer.step()
        scheduler.step()
        rates.append(scheduler.get_last_lr()[0])
    return rates


def test_cosine_warms_up_to_lr_and_decays_to_the_floor():
    config = job(optim={"lr": LR, "scheduler": "cosine", "warmup_ratio": 0.1, "min_lr_ratio": 0.2})
    rates = learning_rates(config, 100)
    assert rates[0] == 0.0 and rates[5] == pytest.approx(LR / 2)  # linear warmup over 10 steps
    assert rates[10] == pytest.approx(LR) and max(rates) == pytest.approx(LR)
    assert rates[55] == pytest.approx(LR * (0.2 + 0.8 * 0.5))  # half-way down the cosine
    assert rates[100] == pytest.approx(LR * 0.2)
    assert all(a >= b for a, b in pairwise(rates[10:]))


def test_linear_decays_to_zero_and_constant_stays():
    linear = learning_rates(job(optim={"lr": LR, "scheduler": "linear", "warmup_ratio": 0.1}), 100)
    assert linear[10] == pytest.approx(LR) and linear[55] == pytest.approx(LR / 2) and linear[100] == 0.0
    constant = learning_rates(job(optim={"lr": LR, "scheduler": "constant", "warmup_ratio": 0.1}), 100)
    assert constant[5] == pytest.approx(LR / 2) and constant[10:] == pytest.approx([LR] * 91)


@pytest.mark.parametrize(
    ("units", "workers", "micro", "accum", "epochs", "steps"),
    [
        (1000, 2, 16, 1, 1, 32),  # 500 units per rank → ceil(500 / 16) = 32 micro-batches
        (1000, 2, 16, 2, 1, 16),
        (1001, 2, 16, 3, 1, 10),  # 500 per rank (the odd unit is dropped by the equal split); 32 // 3
        (1001, 2, 16, 3, 2, 21),  # accumulation carries over the epoch end: 64 // 3, not 2 × 10
        (960, 4, 8, 1, 1, 30),
        (15, 2, 16, 1, 1, 1),  # 7 units: one partial micro-batch
        (15, 2, 16, 2, 1, 0),  # too few for one full accumulation
    ],
)
def test_planned_steps(units, workers, micro, accum, epochs, steps):
    run = {"num_workers": workers, "micro_batch_size": micro, "grad_accum": accum, "epochs": epochs}
    blocks = [Block("train/part-00000.parquet", 0, units)]
    config, capped = job(run=run), job(run={**run, "max_steps": 7})
    assert planned_steps(EpochPlan.of(blocks, config), config) == steps
    assert planned_steps(EpochPlan.of(blocks, capped), capped) == 7


@pytest.mark.parametrize(("stage", "bf16"), [(2, False), (3, True)])
def test_deepspeed_config(stage, bf16):
    config = job(run={"zero_stage": stage, "num_workers": 3, "micro_batch_size": 4, "grad_accum": 5})
    ds = deepspeed_config(config, bf16=bf16)
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_accumulation_steps"] == 5
    assert ds["train_batch_size"] == 4 * 5 * 3
    assert ds["bf16"] == {"enabled": bf16}
    assert ds["gradient_clipping"] == config.optim.max_grad_norm
    zero = ds["zero_optimization"]
    assert zero["stage"] == stage
    assert zero.get("stage3_gather_16bit_weights_on_model_save", False) == (stage == 3)
