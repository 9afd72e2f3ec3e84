from __future__ import annotations

import pytest
import torch

from gazerm.model.reward_model import RewardModel, build_reward_model
from tests.model.conftest import make_batch, tiny_config, to_left_padding, tokenizer_for

BACKBONES = ["tiny-llama", "tiny-mistral", "tiny-bert"]


def build(tokenizers, backbone: str = "tiny-llama", lm_head: bool = False, **overrides) -> RewardModel:
    config = tiny_config(backbone, **overrides)
    return build_reward_model(config, tokenizer_for(tokenizers, backbone), lm_head=lm_head).eval()


@pytest.mark.parametrize("fusion", ["none", "add", "concat"])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_forward_gives_one_finite_reward_per_sequence(tokenizers, backbone, fusion):
    model = build(tokenizers, backbone, fusion=fusion)
    out = model(**make_batch(tokenizer_for(tokenizers, backbone)))
    assert out.rewards.shape == (2,) and out.rewards.dtype == torch.float32
    assert torch.isfinite(out.rewards).all() and out.lm_logits is None
    assert model.pooling == ("cls" if backbone == "tiny-bert" else "last")


@pytest.mark.parametrize("fusion", ["none", "add", "concat"])
def test_decoder_rewards_do_not_depend_on_padding_side(tokenizers, fusion):
    model = build(tokenizers, fusion=fusion)
    batch = make_batch(tokenizers["tiny-llama"])
    right, left = model(**batch).rewards, model(**to_left_padding(batch)).rewards
    torch.testing.assert_close(left, right, atol=1e-5, rtol=1e-4)


def test_rewards_do_not_depend_on_batch_mates(tokenizers):
    model = build(tokenizers)
    batch = make_batch(tokenizers["tiny-llama"])
    alone = {key: value[1:, : int(batch["attention_mask"][1].sum())] for key, value in batch.items()}
    torch.testing.assert_close(model(**alone).rewards, model(**batch).rewards[1:], atol=1e-5, rtol=1e-4)


def test_gaze_changes_the_reward(tokenizers):
    model = build(tokenizers, fusion="concat")
    batch = make_batch(tokenizers["tiny-llama"])
    other = {**batch, "gaze": batch["gaze"] + 1}
    assert not torch.allclose(model(**batch).rewards, model(**other).rewards)


@pytest.mark.parametrize("layout", ["gazerm", "reference"])
def test_compact_concat_matches_the_full_gaze_prefix(tokenizers, monkeypatch, layout):
    model = build(tokenizers, fusion="concat", gaze_layout=layout)
    batch = make_batch(tokenizers["tiny-llama"])
    compact = model(**batch).rewards
    import gazerm.model.reward_model as reward_model

    full_fuse = reward_model.fuse
    monkeypatch.setattr(reward_model, "fuse", lambda *a, **kw: full_fuse(*a, **kw, compact=False))
    torch.testing.assert_close(model(**batch).rewards, compact, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("fusion", ["add", "concat"])
def test_fusion_without_gaze_signal_equals_text_only(tokenizers, fusion):
    """add: zero gaze through a bias-free projector; concat: no token has gaze."""
    gaze_model = build(tokenizers, fusion=fusion)
    text_model = build(tokenizers, fusion="none")
    text_model.load_state_dict(gaze_model.state_dict(), strict=False)
    with torch.no_grad():
        gaze_model.projector.net[0].bias.zero_()
        gaze_model.projector.net[3].bias.zero_()
    batch = make_batch(tokenizers["tiny-llama"])
    silent = {**batch, "gaze": torch.zeros_like(batch["gaze"])}
    if fusion == "concat":
        silent["gaze_mask"] = torch.zeros_like(batch["gaze_mask"])
    torch.testing.assert_close(gaze_model(**silent).rewards, text_model(**batch).rewards)


def test_lora_trains_only_adapters_head_and_projector(tokenizers):
    model = build(tokenizers)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert any("lora_" in name for name in trainable)
    assert all("lora_" in name or name.startswith(("value_head.", "projector.")) for name in trainable)
    assert {"value_head.weight", "projector.net.0.weight", "projector.net.3.weight"} <= set(trainable)


@pytest.mark.parametrize("fusion", ["add", "concat"])
def test_the_reference_layout_trains_its_layer_norms_and_separators_beside_lora(tokenizers, fusion):
    model = build(tokenizers, fusion=fusion, gaze_layout="reference").train()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert {"projector.net.1.weight", "projector.norm.weight"} <= trainable
    assert ("separators" in trainable) == (fusion == "concat")
    if fusion == "concat":  # both start as the mean token embedding
        mean = model.transformer.get_input_embeddings().weight.mean(0)
        torch.testing.assert_close(model.separators, mean.expand(2, -1))
    model(**make_batch(tokenizers["tiny-llama"])).rewards.sum().backward()
    learned = ["projector.norm.weight", *(["separators"] if fusion == "concat" else [])]
    grads = dict(model.named_parameters())
    assert all(grads[name].grad.abs().sum() > 0 for name in learned)


@pytest.mark.parametrize("fusion", ["add", "concat"])
def test_the_reference_layout_keeps_rewards_independent_of_padding_and_batch_mates(tokenizers, fusion):
    model = build(tokenizers, fusion=fusion, gaze_layout="reference")
    batch = make_batch(tokenizers["tiny-llama"])
    rewards = model(**batch).rewards
    torch.testing.assert_close(model(**to_left_padding(batch)).rewards, rewards, atol=1e-5, rtol=1e-4)
    alone = {key: value[1:, : int(batch["attention_mask"][1].sum())] for key, value in batch.items()}
    torch.testing.assert_close(model(**alone).rewards, rewards[1:], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("overrides", [{"positions": "padded"}, {"pooling": "last_slot"}])
def test_the_reference_codes_padding_traits_make_a_reward_depend_on_its_batch(tokenizers, overrides):
    """Why gazerm's defaults differ: with either option, a short row scores differently alone."""
    model = build(tokenizers, fusion="concat", gaze_layout="reference", **overrides)
    batch = make_batch(tokenizers["tiny-llama"])
    alone = {key: value[1:, : int(batch["attention_mask"][1].sum())] for key, value in batch.items()}
    assert not torch.allclose(model(**alone).rewards, model(**batch).rewards[1:], atol=1e-4)


def test_full_fine_tuning_trains_everything(tokenizers):
    model = build(tokenizers, lora=None)
    assert all(p.requires_grad for p in model.parameters())


def test_gradient_checkpointing_still_reaches_lora(tokenizers):
    model = build(tokenizers, fusion="none", gradient_checkpointing=True).train()
    model(**make_batch(tokenizers["tiny-llama"])).rewards.sum().backward()
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert lora_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)


def test_multi_attribute_head(tokenizers):
    model = build(tokenizers, num_outputs=3)
    assert model(**make_batch(tokenizers["tiny-llama"])).rewards.shape == (2, 3)


@pytest.mark.parametrize("fusion", ["none", "concat"])
@pytest.mark.parametrize("backbone", ["tiny-llama", "tiny-mistral"])
def test_lm_logits_align_with_input_ids(tokenizers, backbone, fusion):
    model = build(tokenizers, backbone, lm_head=True, fusion=fusion)
    batch = make_batch(tokenizers["tiny-llama"])
    out = model(**batch, return_lm_logits=True)
    assert out.lm_logits.shape == (*batch["input_ids"].shape, len(tokenizers["tiny-llama"]))


def test_lm_logits_need_an_lm_head(tokenizers):
    model = build(tokenizers)
    with pytest.raises(ValueError, match="no LM head"):
        model(**make_batch(tokenizers["tiny-llama"]), return_lm_logits=True)
    with pytest.raises(ValueError, match="encoder"):
        build(tokenizers, "tiny-bert", lm_head=True)


def test_build_is_seeded_and_leaves_the_global_rng_alone(tokenizers):
    batch = make_batch(tokenizers["tiny-llama"])
    torch.manual_seed(123)
    first = build(tokenizers)(**batch).rewards
    after_build = torch.rand(1)
    torch.manual_seed(123)
    assert torch.equal(build(tokenizers)(**batch).rewards, first)
    assert torch.equal(torch.rand(1), after_build)
    torch.manual_seed(123)
    assert not torch.equal(build(tokenizers, seed=1)(**batch).rewards, first)
    assert torch.equal(torch.rand(1), after_build)
