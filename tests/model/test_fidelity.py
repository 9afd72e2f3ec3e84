"""``model.fidelity: reference`` and the parts it switches on, each against what the paper's code does."""

from __future__ import annotations

import pytest
import torch

from gazerm.model.config import REFERENCE_DEFAULTS, ModelConfig
from gazerm.model.reward_model import build_reward_model
from tests.model.conftest import make_batch, tiny_config, tokenizer_for


def test_the_switch_defaults_every_part_to_the_reference_and_a_set_field_wins():
    config = ModelConfig(fidelity="reference", positions="attended")
    assert config.positions == "attended"
    for name, value in REFERENCE_DEFAULTS.items():
        if name != "positions":
            assert getattr(config, name) == value, name
    plain = ModelConfig()
    assert (plain.train_gaze, plain.separator_init, plain.gaze_layout) == (True, "mean", "gazerm")


def reference_model(tokenizers, fusion: str = "concat", **overrides):
    config = tiny_config(fidelity="reference", fusion=fusion, fp_dropout=(0.0, 0.0), **overrides)
    return build_reward_model(config, tokenizer_for(tokenizers, "tiny-llama"))


@pytest.mark.parametrize("fusion", ["concat", "add"])
def test_an_optimiser_step_in_reference_mode_leaves_the_projector_and_separators_as_built(tokenizers, fusion):
    model = reference_model(tokenizers, fusion)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    batch = make_batch(tokenizer_for(tokenizers, "tiny-llama"))
    loss = -torch.nn.functional.logsigmoid(model(**batch).rewards.diff()).mean()
    loss.backward()
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert not any(name.startswith(("projector.", "separators")) for name in changed)
    assert "value_head.weight" in changed and any("lora_B" in name for name in changed)
    assert all("lora_" in name or name.startswith("value_head.") for name in changed)


def test_reference_separators_are_drawn_like_new_embedding_rows_not_the_mean(tokenizers):
    model = reference_model(tokenizers)
    assert not model.separators.requires_grad
    mean = model.transformer.get_input_embeddings().weight.mean(0)
    assert not torch.allclose(model.separators[0], mean)
    assert 0.01 < float(model.separators.detach().std()) < 0.03  # 128 draws of N(0, 0.02)
