"""How gaze features enter the backbone: not at all, added to token embeddings, or prepended as a soft prompt.

Shapes: ``B`` batch, ``T`` text tokens, ``H`` hidden size, ``G`` gaze slots kept by ``concat`` (``G <= T``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gazerm.model.config import FusionMode
from gazerm.model.projector import GazeProjector


@dataclass
class FusedInputs:
    """What the backbone is called with. The text occupies ``[:, text_offset:]`` of every tensor."""

    inputs_embeds: torch.Tensor  # (B, S, H), S = T (none/add) or G + T (concat)
    attention_mask: torch.Tensor  # (B, S), long
    position_ids: torch.Tensor  # (B, S), contiguous over attended slots
    text_offset: int  # 0 (none/add) or G (concat)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """``cumsum(mask) - 1`` clamped at 0: positions count attended slots only, so left padding, right
    padding and masked gaze slots all give the text the same positions."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def fuse(
    mode: FusionMode,
    projector: GazeProjector | None,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    gaze: torch.Tensor | None = None,
    gaze_mask: torch.Tensor | None = None,
    compact: bool = True,
) -> FusedInputs:
    """Combine token embeddings ``(B, T, H)`` with gaze ``(B, T, 5)`` (``gaze_mask`` ``(B, T)`` marks tokens
    that have gaze; it defaults to ``attention_mask``).

    - ``none``: text only.
    - ``add`` (GazeAdd): ``inputs_embeds + projector(gaze) * gaze_mask``; shapes unchanged.
    - ``concat`` (GazeConcat): ``[gaze_emb ; tok_emb]`` of shape ``(B, G + T, H)`` with mask
      ``[gaze_mask ; attention_mask]``; the text comes last so causal text tokens see every gaze slot.
      With ``compact`` each row's gaze slots are packed to the front (order kept) and the gaze part is
      cut to the longest row's count: slots without gaze are never attended, so this changes no
      output, but prompt tokens (which have no gaze) no longer cost attention compute.
    """
    text_mask = attention_mask.long()
    if mode == "none":
        return FusedInputs(inputs_embeds, text_mask, position_ids_from_mask(text_mask), 0)
    if projector is None or gaze is None:
        raise ValueError(f"fusion={mode!r} needs a projector and gaze features")
    gaze_mask = (text_mask if gaze_mask is None else gaze_mask.long()) * text_mask
    gaze_emb = projector(gaze).to(inputs_embeds.dtype) * gaze_mask.unsqueeze(-1).to(inputs_embeds.dtype)
    if mode == "add":
        return FusedInputs(inputs_embeds + gaze_emb, text_mask, position_ids_from_mask(text_mask), 0)
    if mode != "concat":
        raise ValueError(f"unknown fusion mode {mode!r}")
    if compact:
        gaze_emb, gaze_mask = _pack_front(gaze_emb, gaze_mask)
    mask = torch.cat([gaze_mask, text_mask], dim=1)
    embeds = torch.cat([gaze_emb, inputs_embeds], dim=1)
    return FusedInputs(embeds, mask, position_ids_from_mask(mask), gaze_mask.shape[1])


def _pack_front(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's masked-in slots to the front, keeping their order; trim to the longest row."""
    order = torch.sort(1 - mask, dim=1, stable=True).indices
    keep = int(mask.sum(dim=1).max())
    order = order[:, :keep]
    packed_mask = mask.gather(1, order)
    packed = values.gather(1, order.unsqueeze(-1).expand(-1, -1, values.shape[-1]))
    return packed, packed_mask
