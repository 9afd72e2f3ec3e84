"""How gaze features enter the backbone: not at all, added to token embeddings, or prepended as a soft prompt.

Two layouts (``ModelConfig.gaze_layout``):

- ``gazerm``: gaze covers the response's words; ``add`` offsets only the tokens that have gaze, ``concat``
  prepends one slot per such token. A token without gaze (the prompt, the template, special tokens) is
  left exactly as in a text-only model.
- ``reference``: what the paper's official code does. The projector has LayerNorms
  (``GazeProjector(layer_norms=True)``), gaze covers the prompt's words too (``SequenceEncoder``),
  ``add`` offsets *every* token by ``projector(gaze)``, with zero features where a token has no gaze
  (so such tokens get the learned ``projector(0)``), and ``concat`` wraps the gaze slots in two learned
  separator embeddings: ``[<eye/> ; gaze slots ; </eye> ; text]``.

Shapes: ``B`` batch, ``T`` text tokens, ``H`` hidden size, ``G`` gaze slots kept by ``concat`` (``G <= T``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gazerm.model.config import FusionMode, GazeLayout, Positions
from gazerm.model.projector import GazeProjector


@dataclass
class FusedInputs:
    """What the backbone is called with. The text occupies ``[:, text_offset:]`` of every tensor."""

    inputs_embeds: torch.Tensor  # (B, S, H), S = T (none/add), G + T (concat) or G + 2 + T (reference concat)
    attention_mask: torch.Tensor  # (B, S), long
    position_ids: torch.Tensor  # (B, S), contiguous over attended slots (positions="attended")
    text_offset: int  # 0 (none/add), G (concat) or G + 2 (reference concat)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """``cumsum(mask) - 1`` clamped at 0: positions count attended slots only, so left padding, right
    padding and masked gaze slots all give the text the same positions."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def position_ids(attention_mask: torch.Tensor, positions: Positions = "attended") -> torch.Tensor:
    """``(B, S)`` position ids: ``attended`` counts attended slots only (:func:`position_ids_from_mask`);
    ``padded`` counts every slot, ``0 … S-1`` in each row, as transformers does when no position ids are
    passed (the reference code): padding and masked gaze slots before the text then shift its positions,
    by an amount that depends on the other rows of the batch."""
    if positions == "attended":
        return position_ids_from_mask(attention_mask)
    if positions != "padded":
        raise ValueError(f"unknown positions {positions!r}")
    batch, length = attention_mask.shape
    return torch.arange(length, device=attention_mask.device).expand(batch, length)


def fuse(
    mode: FusionMode,
    projector: GazeProjector | None,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    gaze: torch.Tensor | None = None,
    gaze_mask: torch.Tensor | None = None,
    compact: bool = True,
    layout: GazeLayout = "gazerm",
    separators: torch.Tensor | None = None,
    positions: Positions = "attended",
) -> FusedInputs:
    """Combine token embeddings ``(B, T, H)`` with gaze ``(B, T, 5)`` (``gaze_mask`` ``(B, T)`` marks tokens
    that have gaze; it defaults to ``attention_mask``). ``positions`` as :func:`position_ids` says.

    - ``none``: text only.
    - ``add`` (GazeAdd): ``inputs_embeds + projector(gaze) * gaze_mask``; shapes unchanged. With the
      ``reference`` layout: ``inputs_embeds + projector(gaze * gaze_mask)`` on every slot, so a token
      without gaze gets ``projector(0)`` (padding too, which nothing attends).
    - ``concat`` (GazeConcat): ``[gaze_emb ; tok_emb]`` of shape ``(B, G + T, H)`` with mask
      ``[gaze_mask ; attention_mask]``; the text comes last so causal text tokens see every gaze slot.
      With ``compact`` each row's gaze slots are packed to the front (order kept) and the gaze part is
      cut to the longest row's count: slots without gaze are never attended, so this changes no
      output, but tokens without gaze no longer cost attention compute. With the ``reference`` layout,
      ``separators`` ``(2, H)`` (the learned ``<eye/>`` and ``</eye>`` embeddings) wrap the gaze slots:
      ``[<eye/> ; gaze_emb ; </eye> ; tok_emb]`` of shape ``(B, G + 2 + T, H)`` with mask
      ``[1 ; gaze_mask ; 1 ; attention_mask]``.
    """
    text_mask = attention_mask.long()
    if mode == "none":
        return FusedInputs(inputs_embeds, text_mask, position_ids(text_mask, positions), 0)
    if projector is None or gaze is None:
        raise ValueError(f"fusion={mode!r} needs a projector and gaze features")
    if layout not in ("gazerm", "reference"):
        raise ValueError(f"unknown gaze layout {layout!r}")
    gaze_mask = (text_mask if gaze_mask is None else gaze_mask.long()) * text_mask
    dtype = inputs_embeds.dtype
    if mode == "add":
        if layout == "reference":
            offsets = projector(gaze * gaze_mask.unsqueeze(-1).to(gaze.dtype)).to(dtype)
        else:
            offsets = projector(gaze).to(dtype) * gaze_mask.unsqueeze(-1).to(dtype)
        return FusedInputs(inputs_embeds + offsets, text_mask, position_ids(text_mask, positions), 0)
    if mode != "concat":
        raise ValueError(f"unknown fusion mode {mode!r}")
    gaze_emb = projector(gaze).to(dtype) * gaze_mask.unsqueeze(-1).to(dtype)
    if compact:
        gaze_emb, gaze_mask = _pack_front(gaze_emb, gaze_mask)
    if layout == "reference":
        gaze_emb, gaze_mask = _wrap(gaze_emb, gaze_mask, separators)
    mask = torch.cat([gaze_mask, text_mask], dim=1)
    embeds = torch.cat([gaze_emb, inputs_embeds], dim=1)
    return FusedInputs(embeds, mask, position_ids(mask, positions), gaze_mask.shape[1])


def _wrap(
    gaze_emb: torch.Tensor, gaze_mask: torch.Tensor, separators: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, G, H)`` gaze slots → ``(B, G + 2, H)`` between the two separator embeddings (attended in every
    row, gaze or not, as the reference code's ``<eye/>`` and ``</eye>`` tokens are)."""
    if separators is None or separators.shape != (2, gaze_emb.shape[-1]):
        raise ValueError(f"the reference concat layout needs separators of shape (2, {gaze_emb.shape[-1]})")
    batch, hidden = gaze_emb.shape[0], gaze_emb.shape[-1]
    start, end = separators.to(gaze_emb.dtype).unsqueeze(1).expand(2, batch, hidden).unsqueeze(2)
    ones = gaze_mask.new_ones(batch, 1)
    return torch.cat([start, gaze_emb, end], dim=1), torch.cat([ones, gaze_mask, ones], dim=1)


def _pack_front(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's masked-in slots to the front, keeping their order; trim to the longest row."""
    order = torch.sort(1 - mask, dim=1, stable=True).indices
    keep = int(mask.sum(dim=1).max())
    order = order[:, :keep]
    packed_mask = mask.gather(1, order)
    packed = values.gather(1, order.unsqueeze(-1).expand(-1, -1, values.shape[-1]))
    return packed, packed_mask
