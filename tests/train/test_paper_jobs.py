"""The paper's jobs train in the reference's mode: with a tiny backbone in place of the 7-8B one, a
training step built as a worker builds it (``Trainer.setup``: tokenizer, reward model, AdamW, collator;
DeepSpeed left out) moves LoRA and the score head and leaves the gaze projector as it was built, as the
reference's peft SEQ_CLS model does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gazerm.config import load_config
from gazerm.model.inputs import InputSpec
from gazerm.train.config import TrainJobConfig
from gazerm.train.kinds import LossSpec
from gazerm.train.loop import Trainer
from gazerm.train.order import EpochPlan
from gazerm.train.worker_entry import LoopSettings
from tests.train.test_trainer_loop import UNUSED_BLOCKS, units

JOBS = Path(__file__).resolve().parents[2] / "jobs"
TINY = {
    "model.backbone": "tiny-llama",
    "model.quantization": "none",
    "model.gradient_checkpointing": False,
    "model.fp_dropout": [0.0, 0.0],
    "run.use_gpu": False,
    "optim.lr": 1e-2,
}


class BareEngine:
    """What ``deepspeed.initialize`` wraps, unwrapped: the model called as the engine is."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.module, self.optimizer, self.device = model, optimizer, torch.device("cpu")

    def __call__(self, **inputs):
        return self.module(**inputs)


@pytest.mark.parametrize("name", ["helpsteer2_mistral7b_gazeconcat.yaml", "oasst1_llama3_8b_ffd_trt.yaml"])
def test_a_paper_job_step_leaves_the_projector_as_built(name, monkeypatch):
    import deepspeed

    config = load_config(TrainJobConfig, JOBS / name, TINY)
    assert (config.model.fidelity, config.data.template, config.model.train_gaze) == (
        "reference",
        "reference_chat",
        False,
    )
    monkeypatch.setattr(
        deepspeed, "initialize", lambda model, optimizer, **_: (BareEngine(model, optimizer), optimizer)
    )
    loss = LossSpec.of(config)
    inputs = InputSpec({"predictor": "reading_model"}, config.data.max_length, config.data.template)
    settings = LoopSettings(1, "", "", EpochPlan.of(UNUSED_BLOCKS, config).to_dict(), inputs, loss)
    trainer = Trainer(config, settings, 0, None)
    empty = units("pairwise").slice(0, 0)
    trainer.setup({"validation": empty, "test": empty})
    model = trainer.engine.module
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    micro = trainer.collator.collate(units("pairwise"))[0]
    value, _ = trainer._loss(micro)
    value.backward()
    trainer.engine.optimizer.step()

    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    projector = {n for n in before if ".projector." in f".{n}"}
    assert projector and not projector & changed
    assert any("lora_" in n for n in changed) and any("value_head" in n for n in changed)
