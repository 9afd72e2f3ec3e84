from __future__ import annotations

import pytest
import torch

from gazerm.model.inputs import InputSpec
from gazerm.model.io import load_reward_model, save_reward_model
from gazerm.model.reward_model import RewardModel, build_reward_model
from tests.helpers import READING_MODEL_INPUTS, TEXT_ONLY_INPUTS
from tests.model.conftest import make_batch, tiny_config, tokenizer_for


def trained_looking(config, tokenizer, lm_head: bool = False) -> RewardModel:
    """A built model with every tensor nudged, so LoRA B (zero at init) and heads really round-trip."""
    model = build_reward_model(config, tokenizer, lm_head=lm_head)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return model.eval()


@pytest.mark.parametrize(
    ("backbone", "overrides", "lm_head"),
    [
        ("tiny-llama", {}, False),
        ("tiny-llama", {"lora": None}, True),
        ("tiny-mistral", {"fusion": "add"}, True),
        ("tiny-llama", {"gaze_layout": "reference"}, False),
        ("tiny-mistral", {"fusion": "add", "gaze_layout": "reference", "lora": None}, True),
        ("tiny-bert", {"fusion": "none", "lora": None}, False),
        ("tiny-bert", {"num_outputs": 2}, False),
    ],
)
def test_round_trip_gives_identical_rewards(tmp_path, tokenizers, backbone, overrides, lm_head):
    config, tokenizer = tiny_config(backbone, **overrides), tokenizer_for(tokenizers, backbone)
    model = trained_looking(config, tokenizer, lm_head)
    batch = make_batch(tokenizer)
    with torch.no_grad():
        before = model(**batch, return_lm_logits=lm_head)
    save_reward_model(model, tokenizer, config, READING_MODEL_INPUTS, tmp_path / "rm")
    loaded, loaded_tokenizer, loaded_config = load_reward_model(tmp_path / "rm")
    assert loaded_config == config and not loaded.training
    assert InputSpec.read(tmp_path / "rm") == READING_MODEL_INPUTS  # the directory describes itself
    assert (tmp_path / "rm" / "adapter").exists() == (config.lora is not None)
    reloaded_batch = make_batch(loaded_tokenizer)
    assert torch.equal(reloaded_batch["input_ids"], batch["input_ids"])
    with torch.no_grad():
        after = loaded(**batch, return_lm_logits=lm_head)
    assert torch.equal(after.rewards, before.rewards)
    if lm_head:
        assert torch.equal(after.lm_logits, before.lm_logits)


def test_save_takes_a_gathered_state_dict(tmp_path, tokenizers):
    """As after DeepSpeed ZeRO-3: the module gives the structure, the full weights come separately."""
    config, tokenizer = tiny_config(), tokenizers["tiny-llama"]
    trained = trained_looking(config, tokenizer)
    structure_only = build_reward_model(config, tokenizer)
    save_reward_model(
        structure_only, tokenizer, config, READING_MODEL_INPUTS, tmp_path / "rm", trained.state_dict()
    )
    loaded, _, _ = load_reward_model(tmp_path / "rm")
    batch = make_batch(tokenizer)
    with torch.no_grad():
        assert torch.equal(loaded(**batch).rewards, trained(**batch).rewards)


def test_unknown_format_is_rejected(tmp_path, tokenizers):
    config, tokenizer = tiny_config(fusion="none"), tokenizers["tiny-llama"]
    save_reward_model(build_reward_model(config, tokenizer), tokenizer, config, TEXT_ONLY_INPUTS, tmp_path)
    (tmp_path / "reward_model.json").write_text('{"format": 99, "lm_head": false}')
    with pytest.raises(ValueError, match="format 99"):
        load_reward_model(tmp_path)
