"""``ModelConfig.init_from``: a fresh model takes a saved model's weights, or refuses another architecture."""

from __future__ import annotations

import pytest
import torch

from gazerm.model.config import LoraSettings
from gazerm.model.io import load_reward_model, load_weights_into
from gazerm.model.reward_model import build_reward_model
from tests.conftest import save_random_model
from tests.model.conftest import make_batch, tiny_config


def _rewards(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).rewards


@pytest.mark.parametrize(
    "overrides", [{}, {"fusion": "add", "lora": None}, {"fusion": "none", "num_outputs": 3}]
)
def test_fresh_model_gives_the_saved_models_rewards(tmp_path, tokenizers, overrides):
    saved_dir = save_random_model(tmp_path / "general", **overrides)
    config = tiny_config(**overrides, seed=1, init_from=str(saved_dir))
    tokenizer = tokenizers["tiny-llama"]
    batch = make_batch(tokenizer)
    fresh = build_reward_model(config, tokenizer)
    saved, _, _ = load_reward_model(saved_dir)
    assert not torch.allclose(_rewards(fresh, batch), _rewards(saved, batch))

    load_weights_into(fresh, saved_dir)

    assert torch.equal(_rewards(fresh, batch), _rewards(saved, batch))
    assert fresh.model_config.init_from == str(saved_dir)


def test_pooling_is_the_new_configs_and_weights_still_carry_over(tmp_path, tokenizers):
    saved_dir = save_random_model(tmp_path / "general")
    fresh = build_reward_model(tiny_config(pooling="mean"), tokenizers["tiny-llama"])
    load_weights_into(fresh, saved_dir)
    saved, _, _ = load_reward_model(saved_dir)
    assert fresh.pooling == "mean" and saved.pooling == "last"
    expected = saved.state_dict()
    assert all(torch.equal(tensor, expected[key]) for key, tensor in fresh.state_dict().items())


@pytest.mark.parametrize(
    ("saved", "configured", "lm_head", "named"),
    [
        ({"fusion": "add"}, {"fusion": "concat"}, False, "fusion: saved 'add', configured 'concat'"),
        ({}, {"lora": LoraSettings(r=4)}, False, "lora: saved"),
        ({}, {"num_outputs": 2}, False, "num_outputs: saved 1, configured 2"),
        ({}, {"backbone": "tiny-mistral"}, False, "backbone: saved 'tiny-llama'"),
        ({}, {"fp_hidden": 64}, False, "projector: saved"),
        ({"gaze_layout": "reference"}, {}, False, "gaze_layout: saved 'reference', configured 'gazerm'"),
        ({}, {}, True, "lm_head: saved False, configured True"),
        ({"head": "reference"}, {}, False, "head_bias: saved False, configured True"),
    ],
)
def test_another_architecture_is_refused_naming_it(tmp_path, tokenizers, saved, configured, lm_head, named):
    saved_dir = save_random_model(tmp_path / "general", **saved)
    fresh = build_reward_model(tiny_config(**configured), tokenizers["tiny-llama"], lm_head=lm_head)
    with pytest.raises(ValueError, match=f"init_from {saved_dir}: .*{named}"):
        load_weights_into(fresh, saved_dir)
