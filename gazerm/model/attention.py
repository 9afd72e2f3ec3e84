"""Causal SDPA over an explicit mask, without the masked triangle above the diagonal.

Given a mask (packed rows, pairs sharing their prompt, padded rows), SDPA's kernels compute every query
against every key, the masked keys after it included: only ``is_causal`` lets them skip those, and it
takes no mask. In a causal decoder no query attends to a later key, so here the queries go in chunks,
each against the keys up to its own last one. The output is the same (the keys left out were masked),
for about half the attention work on long rows. Measured on one CPU thread (9 heads of 64 with a causal
mask over 1,500 slots, forward and backward): 256 ms in one call, 155 ms in 8 chunks, 154 ms for
``is_causal`` without a mask.

``model.attn_implementation: sdpa`` loads backbones with :data:`CAUSAL_CHUNKED_SDPA`, registered with
transformers under that name (the name stays out of saved configs). Encoders, rows shorter than two
chunks and calls with a cache or without a mask go to transformers' SDPA unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

CAUSAL_CHUNKED_SDPA = "gazerm_causal_chunked_sdpa"
CHUNKS = 8  # more cut the skipped work finer, at a call each: 8 matched is_causal above
MIN_CHUNK = 128  # shorter rows go whole: their attention is a small share of a step


def causal_chunked_sdpa(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention interface: ``query`` ``(B, heads, L, D)``, ``key`` and ``value``
    ``(B, kv_heads, L, D)``, ``attention_mask`` ``(B, 1, L, L)`` (boolean, or additive); returns
    ``(B, L, heads, D)`` as ``sdpa_attention_forward`` does."""
    length = query.shape[2]
    causal = getattr(module, "is_causal", False) and kwargs.get("is_causal") is not False
    if attention_mask is None or not causal or key.shape[2] != length or length < 2 * MIN_CHUNK:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    size = max(MIN_CHUNK, -(-length // CHUNKS))
    outputs = []
    for start in range(0, length, size):
        end = min(start + size, length)
        chunk, _ = sdpa_attention_forward(
            module,
            query[:, :, start:end],
            key[:, :, :end],
            value[:, :, :end],
            attention_mask[:, :, start:end, :end],
            **kwargs,
        )
        outputs.append(chunk)
    return torch.cat(outputs, dim=1), None


AttentionInterface.register(CAUSAL_CHUNKED_SDPA, causal_chunked_sdpa)
AttentionMaskInterface.register(CAUSAL_CHUNKED_SDPA, sdpa_mask)


def backbone_attention(attn_implementation: str) -> str:
    """The implementation a backbone is loaded with for ``model.attn_implementation``."""
    return CAUSAL_CHUNKED_SDPA if attn_implementation == "sdpa" else attn_implementation
