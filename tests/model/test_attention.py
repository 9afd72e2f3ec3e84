"""Causal SDPA in query chunks gives what one SDPA call over the whole mask gives: outputs and gradients,
for the masks gazerm builds (pairs sharing a prompt, packed rows, padded rows), with grouped key/value
heads; encoders and short rows are left to transformers' SDPA."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import gazerm.model.attention as attention
from gazerm.model.attention import CAUSAL_CHUNKED_SDPA, causal_chunked_sdpa
from gazerm.model.prefix_sharing import CHOSEN, PREFIX, REJECTED, pair_mask
from gazerm.model.reward_model import build_reward_model
from tests.model.conftest import tiny_config
from tests.model.test_prefix_sharing import TOLERANCE, forward_backward, pair_batch

LENGTH, HEADS, KV_HEADS, DIM = 37, 4, 2, 8


class Module(nn.Module):
    """What transformers' SDPA reads off an attention layer."""

    def __init__(self, causal: bool) -> None:
        super().__init__()
        self.is_causal, self.num_key_value_groups = causal, HEADS // KV_HEADS


def causal_mask(lengths: list[int], padded: int = 0) -> torch.Tensor:
    """``(1, 1, L, L)``: sequences of ``lengths`` back to back, each causal, then ``padded`` slots."""
    owner = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)] + [torch.full((padded,), -1)])
    same = (owner[:, None] == owner[None, :]) & (owner[None, :] >= 0)
    return (same & torch.ones(len(owner), len(owner), dtype=torch.bool).tril())[None, None]


def shared_pair_mask() -> torch.Tensor:
    """A pair sharing a 9-slot prompt (chosen 14 slots, rejected 10), then a packed pair of 4."""
    part = torch.tensor([PREFIX] * 9 + [CHOSEN] * 14 + [REJECTED] * 10 + [PREFIX] * 2 + [CHOSEN, REJECTED])
    pair = torch.tensor([0] * 33 + [1] * 4)
    return pair_mask(pair[None], part[None])


MASKS = {
    "shared prompt, packed": shared_pair_mask(),
    "packed": causal_mask([20, 11, 6]),
    "padded": causal_mask([30], padded=7),
}


def attend(function, module: nn.Module, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``function``'s output and the gradients of query, key and value."""
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(2, HEADS, LENGTH, DIM, generator=generator, requires_grad=True)
    key, value = (
        torch.randn(2, KV_HEADS, LENGTH, DIM, generator=generator, requires_grad=True) for _ in range(2)
    )
    output, _ = function(module, query, key, value, mask.expand(2, 1, LENGTH, LENGTH), dropout=0.0)
    (output * torch.linspace(-1, 1, output.numel()).view_as(output)).sum().backward()
    return output.detach(), query.grad, key.grad, value.grad


@pytest.mark.parametrize("mask", MASKS.values(), ids=MASKS.keys())
def test_chunked_queries_give_the_whole_calls_output_and_gradients(monkeypatch, mask):
    monkeypatch.setattr(attention, "MIN_CHUNK", 4)  # 37 slots: 5 chunks of 8, the last of 5
    chunked = attend(causal_chunked_sdpa, Module(causal=True), mask)
    whole = attend(sdpa_attention_forward, Module(causal=True), mask)
    for mine, theirs in zip(chunked, whole, strict=True):
        torch.testing.assert_close(mine, theirs, **TOLERANCE)


def test_an_encoders_attention_to_later_keys_is_kept(monkeypatch):
    monkeypatch.setattr(attention, "MIN_CHUNK", 4)
    everything = torch.ones(1, 1, LENGTH, LENGTH, dtype=torch.bool)  # bidirectional: chunks would cut it
    mine = attend(causal_chunked_sdpa, Module(causal=False), everything)
    theirs = attend(sdpa_attention_forward, Module(causal=False), everything)
    for a, b in zip(mine, theirs, strict=True):
        torch.testing.assert_close(a, b, **TOLERANCE)


@pytest.mark.parametrize("packed", [False, True])
def test_a_models_shared_forward_is_the_same_in_chunks(tokenizers, monkeypatch, packed):
    model = build_reward_model(tiny_config(), tokenizers["tiny-llama"], lm_head=True).eval()
    assert model.transformer.config._attn_implementation == CAUSAL_CHUNKED_SDPA
    assert "_attn_implementation" not in model.transformer.config.to_dict()  # saved configs say nothing
    batch = pair_batch(tokenizers["tiny-llama"])
    whole = forward_backward(model, batch, shared_prefix=True, packed=packed)
    monkeypatch.setattr(attention, "MIN_CHUNK", 3)
    chunked = forward_backward(model, batch, shared_prefix=True, packed=packed)
    for mine, theirs in zip(chunked[:2], whole[:2], strict=True):
        torch.testing.assert_close(mine, theirs, **TOLERANCE)
    for name, grad in whole[2].items():
        torch.testing.assert_close(chunked[2][name], grad, **TOLERANCE)
