"""Packed (padding-free) forwards give what padded ones give: rewards, LM logits and gradients.

The rows differ a lot in length and the short ones come after the long one, so a packed row whose
sequences attended across their boundaries, or whose position ids ran on instead of restarting,
would change the later rewards.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from transformers import LlamaConfig

from gazerm.errors import ConfigError
from gazerm.model.fusion import FusedInputs, position_ids_from_mask
from gazerm.model.packing import attention_key_cost, first_fit, pack, row_width, unpack
from gazerm.model.reward_model import RewardModel, build_reward_model
from tests.model.conftest import make_batch, tiny_config, to_left_padding, tokenizer_for

TEXTS = [
    "Yes.",  # no token past the prompt: no gaze slot at all under concat
    "Human: How do I bake bread at home? Assistant: Mix flour, water, yeast and salt, knead the dough "
    "for ten minutes, let it rise for an hour, shape it, let it rise again and bake it for forty minutes.",
    "Human: hi? Assistant: ok.",
    "Human: Tea or coffee? Assistant: Tea, with milk.",
]
TOLERANCE = {"atol": 1e-5, "rtol": 1e-4}


def build(tokenizers, backbone: str, fusion: str, layout: str = "gazerm") -> RewardModel:
    config = tiny_config(backbone, fusion=fusion, gaze_layout=layout)
    lm_head = backbone != "tiny-bert"
    return build_reward_model(config, tokenizer_for(tokenizers, backbone), lm_head=lm_head).eval()


def forward_backward(
    model: RewardModel, batch: dict, packed: bool
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Rewards, LM logits and the trainable parameters' gradients of one forward + backward."""
    model.zero_grad()
    out = model(**batch, return_lm_logits=True, packed=packed)
    text = batch["attention_mask"].bool()
    (out.rewards.sum() + out.lm_logits[text].logsumexp(-1).mean()).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return out.rewards.detach(), out.lm_logits[text].detach(), grads


# (fusion, gaze_layout); the layout does nothing without fusion
LAYOUTS = [
    ("none", "gazerm"),
    *((fusion, layout) for fusion in ("add", "concat") for layout in ("gazerm", "reference")),
]


@pytest.mark.parametrize("rows", ["cheapest", "narrowest"])
@pytest.mark.parametrize(("fusion", "layout"), LAYOUTS)
@pytest.mark.parametrize("backbone", ["tiny-llama", "tiny-mistral"])
def test_packed_forward_and_backward_equal_padded(tokenizers, backbone, fusion, layout, rows, monkeypatch):
    if rows == "narrowest":  # attention so dear that rows stay as wide as padded ones, with tails
        monkeypatch.setattr(RewardModel, "key_cost", 1.0)
    model = build(tokenizers, backbone, fusion, layout)
    batch = make_batch(tokenizer_for(tokenizers, backbone), TEXTS)
    lengths = batch["attention_mask"].sum(1)
    assert lengths.max() > 4 * lengths.min()  # right padding is most of the short rows
    rewards, logits, grads = forward_backward(model, batch, packed=False)
    packed_rewards, packed_logits, packed_grads = forward_backward(model, batch, packed=True)
    torch.testing.assert_close(packed_rewards, rewards, **TOLERANCE)
    torch.testing.assert_close(packed_logits, logits, **TOLERANCE)
    assert any("lora_" in name for name in grads)
    assert ("projector.net.0.weight" in grads) == (fusion != "none")
    assert ("separators" in grads) == (fusion == "concat" and layout == "reference")
    for name, grad in grads.items():
        torch.testing.assert_close(packed_grads[name], grad, **TOLERANCE, msg=lambda m, n=name: f"{n}: {m}")


def test_one_row_as_for_flash_attention_equals_padded(tokenizers):
    """flash_attention_2 gets all sequences in one row (its varlen kernel); sdpa reads that row right too."""
    model = build(tokenizers, "tiny-llama", "concat")
    batch = make_batch(tokenizers["tiny-llama"], TEXTS)
    rewards, logits, grads = forward_backward(model, batch, packed=False)
    model.model_config = model.model_config.model_copy(update={"attn_implementation": "flash_attention_2"})
    seen = record_backbone_inputs(model)
    packed_rewards, packed_logits, packed_grads = forward_backward(model, batch, packed=True)
    lengths = batch["attention_mask"].sum(1) + batch["gaze_mask"].sum(1)  # text and gaze slots
    longest_first = sorted(lengths.tolist(), reverse=True)
    assert seen["position_ids"].tolist() == [[p for n in longest_first for p in range(n)]]
    torch.testing.assert_close(packed_rewards, rewards, **TOLERANCE)
    torch.testing.assert_close(packed_logits, logits, **TOLERANCE)
    for name, grad in grads.items():
        torch.testing.assert_close(packed_grads[name], grad, **TOLERANCE)


def test_packed_left_padded_rows_equal_padded(tokenizers):
    model = build(tokenizers, "tiny-llama", "concat")
    batch = to_left_padding(make_batch(tokenizers["tiny-llama"], TEXTS))
    with torch.no_grad():
        torch.testing.assert_close(model(**batch, packed=True).rewards, model(**batch).rewards, **TOLERANCE)


def record_backbone_inputs(model: RewardModel) -> dict:
    """The keyword arguments of the backbone's latest forward."""
    seen = {}
    model.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(kwargs), with_kwargs=True
    )
    return seen


def segments(position_ids: torch.Tensor) -> list[int]:
    """Lengths of the runs 0, 1, 2, … in each row; fails on a run that does not start at 0."""
    lengths = []
    for row in position_ids.tolist():
        for position in row:
            if position == 0:
                lengths.append(0)
            assert position == lengths[-1], f"position {position} continues no run: {row}"
            lengths[-1] += 1
    return lengths


@pytest.mark.parametrize("fusion", ["none", "concat"])
def test_the_backbone_sees_fewer_unmasked_rows_with_positions_restarting_per_sequence(tokenizers, fusion):
    model = build(tokenizers, "tiny-llama", fusion)
    batch = make_batch(tokenizers["tiny-llama"], TEXTS)
    seen = record_backbone_inputs(model)
    with torch.no_grad():
        model(**batch, packed=True)
    lengths = batch["attention_mask"].sum(1)
    if fusion == "concat":  # every token with gaze adds one attended gaze slot before the text
        lengths = lengths + batch["gaze_mask"].sum(1)
    rows, width = seen["position_ids"].shape
    assert seen["attention_mask"] is None and seen["inputs_embeds"].shape[:2] == (rows, width)
    padded = batch["attention_mask"].shape[1] + (batch["gaze_mask"].shape[1] if fusion == "concat" else 0)
    cheapest = row_width(lengths.tolist(), padded, model.key_cost)
    assert rows < len(TEXTS) and width == cheapest >= int(lengths.max())
    runs = segments(seen["position_ids"])
    assert not Counter(lengths.tolist()) - Counter(runs)  # every sequence is a run of its own
    assert len(runs) <= len(TEXTS) + rows  # and at most one unused tail per row


def test_pack_places_sequences_first_fit_and_unpack_puts_them_back():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 1, 0, 0]])
    embeds = torch.randn(3, 5, 4)
    fused = FusedInputs(embeds, mask, position_ids_from_mask(mask), 0)
    packed = pack(fused, row_length=5)  # 5 fills row 0; 3 then 1 share row 1, whose last slot is a tail
    assert packed.inputs_embeds.shape == (2, 5, 4) and packed.padded_shape == (3, 5)
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 0, 0]]
    torch.testing.assert_close(packed.inputs_embeds[0], embeds[1])
    torch.testing.assert_close(
        packed.inputs_embeds[1], torch.cat([embeds[0, :3], embeds[2, 2:3], torch.zeros(1, 4)])
    )
    torch.testing.assert_close(unpack(packed.inputs_embeds, packed), embeds * mask.unsqueeze(-1))
    one_row = pack(fused)
    assert one_row.position_ids.tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 0]]
    torch.testing.assert_close(unpack(one_row.inputs_embeds, one_row), embeds * mask.unsqueeze(-1))
    with pytest.raises(ValueError, match="cannot hold"):
        pack(fused, row_length=4)


def test_rows_are_as_wide_as_costs_least_within_the_padded_mask():
    lengths = [5, 3, 1]  # 5 | 3 + 1 in rows of 5 (10 slots, a tail of 1); 9 in one row
    assert first_fit(lengths, 5)[1] == [0, 1]
    assert row_width(lengths, 5, key_cost=0.0, max_mask_area=100) == 9  # slots alone: one row
    assert row_width(lengths, 5, max_mask_area=100, key_cost=1.0) == 5  # 2 x 5 x 6 = 60 < 9 x 10 = 90
    assert row_width(lengths, 5, max_mask_area=80, key_cost=0.0) == 5  # 9 x 9 = 81: a larger mask
    assert row_width(lengths, 2, max_mask_area=100, key_cost=1.0) == 5  # never narrower than the longest
    # 4 | 3 | 3 in rows of 4 cost 12 (1 + 4 k), one row of 10 costs 10 (1 + 10 k): less while k < 1/26
    assert row_width([4, 3, 3], 4, max_mask_area=100, key_cost=0.025) == 10
    assert row_width([4, 3, 3], 4, max_mask_area=100, key_cost=0.05) == 4
    assert row_width([4, 4, 4], 4, max_mask_area=100, key_cost=0.0) == 4  # no tails: the narrowest


@pytest.mark.parametrize(("attention", "width"), [("sdpa", 383 + 313), ("eager", 383)])
def test_eager_rows_hold_no_larger_mask_than_the_padded_batch(tokenizers, monkeypatch, attention, width):
    """Eager attention keeps each row's scores, planned at the padded size: 383 + 313 slots in one row
    would hold a mask of 696 x 696, more than 4 padded rows of 307 (or 2 rows of 383) do."""
    monkeypatch.setattr(RewardModel, "key_cost", 0.0)  # slots alone: one row, unless capped
    model = build_reward_model(tiny_config(attn_implementation=attention), tokenizers["tiny-llama"])
    assert model._row_width([383, 313], (4, 307)) == width


def test_a_keys_cost_is_the_query_width_over_a_layers_weights():
    smollm2 = LlamaConfig(
        hidden_size=576, num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536, head_dim=64
    )
    # (576 x 64 x 2 x (9 + 3) + 3 x 576 x 1536) weights per layer, 576 query dimensions
    assert attention_key_cost(smollm2) == pytest.approx(1 / 6144)


def test_unpack_passes_gradients_to_the_packed_slots_only():
    mask = torch.tensor([[1, 0], [1, 1]])
    packed = pack(FusedInputs(torch.randn(2, 2, 3), mask, position_ids_from_mask(mask), 0), row_length=2)
    hidden = torch.randn(*packed.inputs_embeds.shape, requires_grad=True)
    unpack(hidden, packed).sum().backward()
    torch.testing.assert_close(
        hidden.grad, torch.tensor([[1.0, 1.0], [1.0, 0.0]]).unsqueeze(-1).expand(2, 2, 3)
    )


@pytest.mark.parametrize("overrides", [{"positions": "padded"}, {"pooling": "last_slot"}])
def test_a_model_that_reads_padding_cannot_pack(tokenizers, overrides):
    model = build_reward_model(tiny_config(**overrides), tokenizers["tiny-llama"])
    with pytest.raises(ConfigError, match=r"data\.packing drops padding"):
        model(**make_batch(tokenizers["tiny-llama"], TEXTS), packed=True)


def test_an_encoder_cannot_pack(tokenizers):
    model = build(tokenizers, "tiny-bert", "none")
    with pytest.raises(ConfigError, match=r"data\.packing .*tiny-bert is an encoder"):
        model(**make_batch(tokenizers["tiny-bert"], TEXTS), packed=True)
