"""Pairs run as one sequence sharing their prompt give what their rows give run apart: rewards, LM logits
and gradients, for every fusion, padded or packed, sdpa or eager.

The pairs' prompts and responses differ a lot in length, one response is a prefix of its partner and one
pair is the same sequence twice, so a rejected slot that saw a chosen one, a position that did not go on
from the prompt, or a shared slot that differed would change the rewards.
"""

from __future__ import annotations

import pytest
import torch

from gazerm.errors import ConfigError
from gazerm.model.fusion import FusedInputs, position_ids_from_mask
from gazerm.model.packing import unpack
from gazerm.model.prefix_sharing import CHOSEN, PREFIX, REJECTED, pair_mask, share_prefixes
from gazerm.model.reward_model import RewardModel, build_reward_model
from tests.model.conftest import tiny_config, to_left_padding

PROMPTS = [
    "Human: How do I bake bread at home? Assistant:",
    "Human: hi? Assistant:",
    "Human: Tea or coffee? Assistant:",
    "Human: Name a colour. Assistant:",
]
RESPONSES = [
    (" Mix flour, water, yeast and salt, knead it, let it rise and bake it.", " Buy some."),
    (" Hello! How can I help you today?", " Go away."),
    (" Tea", " Tea, with milk and no sugar."),  # the chosen side is a prefix of the rejected one
    (" Blue.", " Blue."),  # the same sequence twice
]
TOLERANCE = {"atol": 1e-5, "rtol": 1e-4}


def pair_batch(tokenizer, seed: int = 0) -> dict[str, torch.Tensor]:
    """Chosen rows, then rejected rows, right-padded; gaze on every token, the same on both sides of a pair
    wherever their tokens are the same (a reading of the prompt), else drawn anew."""
    texts = [p + r[0] for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    texts += [p + r[1] for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    generator = torch.Generator().manual_seed(seed)
    gaze = torch.rand(*ids.shape, 5, generator=generator)
    pairs = len(PROMPTS)
    same = (ids[:pairs] == ids[pairs:]).long().cumprod(-1).bool() & mask[:pairs].bool() & mask[pairs:].bool()
    gaze[pairs:][same] = gaze[:pairs][same]
    return {"input_ids": ids, "attention_mask": mask, "gaze": gaze, "gaze_mask": mask.bool()}


def forward_backward(model: RewardModel, batch: dict, **options: bool):
    """Rewards, LM logits at text slots and the trainable parameters' gradients."""
    model.zero_grad()
    out = model(**batch, return_lm_logits=True, **options)
    text = batch["attention_mask"].bool()
    (out.rewards.sum() + out.lm_logits[text].logsumexp(-1).mean()).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return out.rewards.detach(), out.lm_logits[text].detach(), grads


def assert_same(shared, apart) -> None:
    (rewards, logits, grads), (apart_rewards, apart_logits, apart_grads) = shared, apart
    torch.testing.assert_close(rewards, apart_rewards, **TOLERANCE)
    torch.testing.assert_close(logits, apart_logits, **TOLERANCE)
    assert grads.keys() == apart_grads.keys() and any("lora_" in name for name in grads)
    for name, grad in apart_grads.items():
        torch.testing.assert_close(grads[name], grad, **TOLERANCE, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("packed", [False, True, "narrowest"])
@pytest.mark.parametrize(
    ("fusion", "layout"), [("none", "gazerm"), ("add", "gazerm"), ("concat", "reference")]
)
@pytest.mark.parametrize("backbone", ["tiny-llama", "tiny-mistral"])
def test_shared_forward_and_backward_equal_the_rows_apart(
    tokenizers, backbone, fusion, layout, packed, attention, monkeypatch
):
    if packed == "narrowest":  # packed rows no wider than the longest pair, with tails
        monkeypatch.setattr(RewardModel, "key_cost", 1.0)
    config = tiny_config(backbone, fusion=fusion, gaze_layout=layout, attn_implementation=attention)
    model = build_reward_model(config, tokenizers["tiny-llama"], lm_head=True).eval()
    batch = pair_batch(tokenizers["tiny-llama"])
    apart = forward_backward(model, batch)
    assert_same(forward_backward(model, batch, shared_prefix=True, packed=bool(packed)), apart)


def test_left_padded_pairs_share_too(tokenizers):
    model = build_reward_model(tiny_config(), tokenizers["tiny-llama"]).eval()
    batch = to_left_padding(pair_batch(tokenizers["tiny-llama"]))
    with torch.no_grad():
        shared = model(**batch, shared_prefix=True).rewards
        torch.testing.assert_close(shared, model(**batch).rewards, **TOLERANCE)


def fused_pairs(tokenizer, model: RewardModel) -> FusedInputs:
    """:func:`pair_batch` fused (in eval mode: the projector's dropout would tell the sides apart)."""
    batch = pair_batch(tokenizer)
    model.eval()
    with torch.no_grad():
        return model._fused(batch["input_ids"], batch["attention_mask"], batch["gaze"], batch["gaze_mask"])


def test_the_prompt_is_computed_once_and_each_pair_is_one_row(tokenizers):
    tokenizer = tokenizers["tiny-llama"]
    fused = fused_pairs(tokenizer, build_reward_model(tiny_config(fusion="none"), tokenizer))
    rows, prefixes = share_prefixes(fused)
    pairs = len(PROMPTS)
    lengths = fused.attention_mask.sum(1).tolist()
    prompts = [len(tokenizer(p)["input_ids"]) for p in PROMPTS]
    assert prefixes[3] == lengths[3] == lengths[pairs + 3]  # the same sequence twice: all of it
    assert prefixes[2] == lengths[2] < lengths[pairs + 2]  # the chosen side is the rejected one's start
    assert all(prompt <= prefix for prompt, prefix in zip(prompts[:2], prefixes[:2], strict=True))
    sizes = [lengths[p] + lengths[pairs + p] - prefixes[p] for p in range(pairs)]
    assert rows.inputs_embeds.shape[:2] == (pairs, max(sizes))
    assert rows.attention_mask.shape == (pairs, 1, max(sizes), max(sizes))
    # the rejected side's positions go on from the shared prompt
    chosen, rejected = lengths[0], lengths[pairs]
    assert rows.position_ids[0, :chosen].tolist() == list(range(chosen))
    assert rows.position_ids[0, chosen : sizes[0]].tolist() == list(range(prefixes[0], rejected))


def test_packed_pairs_fill_rows_first_fit_and_unpack_puts_every_slot_back():
    # three pairs of a 6-slot batch: 6 + 6 sharing 4 (8 slots), 2 + 2 the same (2), 3 + 1 sharing 1 (3)
    mask = torch.tensor(
        [[1] * 6, [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [1] * 6, [1, 1, 0, 0, 0, 0], [1] + [0] * 5]
    )
    embeds = torch.randn(6, 6, 4)
    embeds[3, :4], embeds[4, :2], embeds[5, :1] = embeds[0, :4], embeds[1, :2], embeds[2, :1]
    fused = FusedInputs(embeds, mask, position_ids_from_mask(mask), 0)
    rows, prefixes = share_prefixes(fused, widths=max)  # rows as wide as the longest pair
    assert prefixes == [4, 2, 1]
    assert rows.inputs_embeds.shape == (2, 8, 4)  # 8 fills row 0; 3 then 2 share row 1, with a tail of 3
    assert rows.position_ids.tolist() == [[0, 1, 2, 3, 4, 5, 4, 5], [0, 1, 2, 0, 1, 0, 1, 2]]
    torch.testing.assert_close(rows.inputs_embeds[0], torch.cat([embeds[0], embeds[3, 4:]]))
    torch.testing.assert_close(rows.inputs_embeds[1, :5], torch.cat([embeds[2, :3], embeds[1, :2]]))
    torch.testing.assert_close(unpack(rows.inputs_embeds, rows), embeds * mask.unsqueeze(-1))
    hidden = rows.inputs_embeds.clone().requires_grad_()
    unpack(hidden, rows).sum().backward()  # a shared slot's gradient is both sides' sum
    assert hidden.grad[0, :, 0].tolist() == [2, 2, 2, 2, 1, 1, 1, 1]
    assert hidden.grad[1, :, 0].tolist() == [2, 1, 1, 2, 2, 0, 0, 0]
    one_row, _ = share_prefixes(fused, widths=sum)  # the three pairs in one row of 13
    assert one_row.inputs_embeds.shape == (1, 13, 4) and one_row.attention_mask.shape == (1, 1, 13, 13)
    torch.testing.assert_close(unpack(one_row.inputs_embeds, one_row), embeds * mask.unsqueeze(-1))


def test_different_gaze_on_the_prompt_shares_only_what_is_equal(tokenizers):
    """GazeAdd adds each slot's gaze to its embedding: where the two readings of a prompt differ, those
    slots are not the same input, and are not shared."""
    tokenizer = tokenizers["tiny-llama"]
    model = build_reward_model(tiny_config(fusion="add"), tokenizer).eval()
    batch = pair_batch(tokenizer)
    pairs = len(PROMPTS)
    batch["gaze"][pairs, 3:] += 1.0  # the first rejected row read differently from its fourth token on
    with torch.no_grad():
        fused = model._fused(batch["input_ids"], batch["attention_mask"], batch["gaze"], batch["gaze_mask"])
        _, prefixes = share_prefixes(fused)
        assert prefixes[0] == 3
        torch.testing.assert_close(
            model(**batch, shared_prefix=True).rewards, model(**batch).rewards, **TOLERANCE
        )


def test_the_mask_keeps_rejected_slots_from_chosen_ones_and_pairs_apart():
    # one row: pair 0 is prefix 2, chosen 1, rejected 2; pair 1 is one shared slot; then a tail slot
    pair_of = torch.tensor([[0, 0, 0, 0, 0, 1, -1]])
    part = torch.tensor([[PREFIX, PREFIX, CHOSEN, REJECTED, REJECTED, PREFIX, PREFIX]])
    mask = pair_mask(pair_of, part)[0, 0].int().tolist()
    assert mask == [
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],
        [1, 1, 0, 1, 0, 0, 0],
        [1, 1, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 1],
    ]


def test_an_odd_batch_is_no_pairwise_batch():
    mask = torch.ones(3, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="chosen rows then rejected rows; got 3"):
        share_prefixes(FusedInputs(torch.zeros(3, 2, 4), mask, position_ids_from_mask(mask), 0))


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        ({"backbone": "tiny-bert"}, "tiny-bert is an encoder"),
        ({"pooling": "last_slot"}, "drops padding"),
        ({"attn_implementation": "flash_attention_2"}, "flash_attention_2 does not take"),
    ],
)
def test_models_that_cannot_share_are_refused_by_the_config(overrides, refusal):
    with pytest.raises(ValueError, match=f"pair_forward=shared .*{refusal}"):
        tiny_config(pair_forward="shared", **overrides)


def test_a_hub_encoder_is_refused_when_it_first_runs(tokenizers):
    model = build_reward_model(tiny_config("tiny-bert"), tokenizers["tiny-bert"])
    batch = pair_batch(tokenizers["tiny-bert"])
    with pytest.raises(ConfigError, match=r"model\.pair_forward=shared needs a causal decoder"):
        model(**batch, shared_prefix=True)
