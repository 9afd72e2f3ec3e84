"""Padding-free forwards: the attended slots of a fused batch packed into few rows, and back.

A padded batch spends compute on padding; packed, the backbone sees (almost) only real slots. The
sequences sharing a row are told apart by their position ids alone, which restart at 0 for each one
(``fuse`` counts attended slots only): with ``attention_mask=None`` transformers then calls flash-attn's
varlen kernel (``flash_attention_2``, one row) or builds a block-diagonal causal mask (sdpa, eager).

For sdpa and eager a row's slots attend to one another's keys under a dense mask (the mask forbids,
the kernel still computes up to each query chunk's end, ``gazerm.model.attention``), so a row costs more
than its slots: :func:`row_width` picks the width (first-fit, longest first) that costs least, between
the padded batch's width, whose narrow rows leave unused tails, and one row of all ``N``, whose keys are
mostly other sequences'. A row's unused tail is one more short sequence, of zeros, whose output is
dropped.

Shapes: ``B`` batch, ``S`` fused slots per row, ``H`` hidden size, ``N`` attended slots of the batch,
``R`` packed rows of ``W`` slots each (``R = 1, W = N`` for one row).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from gazerm.model.fusion import FusedInputs

if TYPE_CHECKING:
    from transformers import PretrainedConfig


@dataclass
class PackedInputs:
    """Sequences back to back in ``R`` rows, and where each attended slot sits in both layouts."""

    inputs_embeds: torch.Tensor  # (R, W, H), zeros in the rows' tails
    position_ids: torch.Tensor  # (R, W), restarting at 0 for every sequence and every tail
    padded_slots: torch.Tensor  # (N,) long: b * S + s of each attended slot, row-major
    packed_slots: torch.Tensor  # (N,) long: r * W + w, where that slot went
    padded_shape: tuple[int, int]  # (B, S)
    # None: the sequences are told apart by their restarting position ids; else (R, 1, W, W) bool, True
    # where a slot may attend (``gazerm.model.prefix_sharing``, where sequences share slots)
    attention_mask: torch.Tensor | None = None


def first_fit(lengths: list[int], width: int) -> tuple[list[tuple[int, int]], list[int]]:
    """``(row, offset)`` of each sequence in rows of ``width`` slots, longest first into the first row
    with room; and each row's room left (its tail)."""
    places = [(0, 0)] * len(lengths)
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, left in enumerate(room) if left >= lengths[index]), len(room))
        if row == len(room):
            room.append(width)
        places[index] = (row, width - room[row])
        room[row] -= lengths[index]
    return places, room


def attention_key_cost(config: PretrainedConfig) -> float:
    """What one more key costs a slot's causal attention, relative to the slot's trip through a layer's
    weights, for a Llama-style decoder layer: 2 FLOPs per weight (q and o of ``heads x head_dim`` outputs,
    k and v of ``kv_heads x head_dim``, a gated MLP of 3 ``hidden x intermediate`` matrices) against 4 per
    query-key pair and query width (the scores and the weighted sum). A row of ``W`` slots then costs
    ``W (1 + key_cost W)``, its queries attending to ``W / 2`` keys each on average. SmolLM2-135M: 1/6144."""
    hidden, heads = config.hidden_size, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    intermediate = getattr(config, "intermediate_size", None) or 4 * hidden
    weights = hidden * head_dim * 2 * (heads + kv_heads) + 3 * hidden * intermediate
    return heads * head_dim / weights


def row_width(lengths: list[int], narrowest: int, key_cost: float, max_mask_area: int | None = None) -> int:
    """The width of the rows :func:`first_fit` packs ``lengths`` into at the least compute, a row of ``W``
    slots costing ``W (1 + key_cost W)`` (:func:`attention_key_cost`). Tried: ``narrowest`` (at least the
    longest sequence), whose rows leave the most unused tail, and the widths that would hold the slots in
    fewer rows, down to one, while their masks (``rows x W x W``) stay within ``max_mask_area``. The cost
    alone keeps rows from growing far: every slot of a wider row pays for more keys, which only the tail
    slots it saves repay. Ties go to the narrower rows."""
    narrowest, total = max(narrowest, max(lengths)), sum(lengths)
    best_cost, best_width = float("inf"), narrowest
    for rows in range(len(first_fit(lengths, narrowest)[1]), 0, -1):
        width = max(narrowest, -(-total // rows))
        used = len(first_fit(lengths, width)[1])
        if max_mask_area is not None and width != narrowest and used * width * width > max_mask_area:
            break  # fewer rows are only wider
        cost = used * width * (1 + key_cost * width)
        if cost < best_cost:
            best_cost, best_width = cost, width
    return best_width


def pack(fused: FusedInputs, row_length: int | None = None) -> PackedInputs:
    """Move the attended slots of ``(B, S, H)`` into rows of ``row_length`` slots (at least the longest
    sequence; ``None``: one row of all ``N``), each sequence's slots contiguous and in order."""
    batch, length, hidden = fused.inputs_embeds.shape
    device = fused.inputs_embeds.device
    lengths = fused.attention_mask.sum(1).tolist()
    width = row_length or sum(lengths)
    if width < max(lengths):
        raise ValueError(f"rows of {width} slots cannot hold a sequence of {max(lengths)}")
    places, room = first_fit(lengths, width)
    padded_slots = fused.attention_mask.reshape(-1).nonzero().squeeze(-1)
    packed_slots = torch.cat(
        [row * width + offset + torch.arange(n) for (row, offset), n in zip(places, lengths, strict=True)]
    ).to(device)
    embeds = fused.inputs_embeds.reshape(batch * length, hidden).index_select(0, padded_slots)
    packed_embeds = embeds.new_zeros(len(room) * width, hidden).index_copy(0, packed_slots, embeds)
    tail_start = width - torch.tensor(room, device=device).unsqueeze(1)
    position_ids = (torch.arange(width, device=device) - tail_start).clamp(min=0)  # the tails' positions
    position_ids.view(-1)[packed_slots] = fused.position_ids.reshape(-1)[padded_slots]
    return PackedInputs(
        packed_embeds.view(len(room), width, hidden),
        position_ids,
        padded_slots,
        packed_slots,
        (batch, length),
    )


def unpack(hidden: torch.Tensor, packed: PackedInputs) -> torch.Tensor:
    """Move the backbone's ``(R, W, H)`` back to ``(B, S, H)``, zeros at unattended slots, so pooling and
    the LM head read it as they read a padded forward's output."""
    batch, length = packed.padded_shape
    flat = hidden.reshape(-1, hidden.shape[-1]).index_select(0, packed.packed_slots)
    out = hidden.new_zeros(batch * length, hidden.shape[-1]).index_copy(0, packed.padded_slots, flat)
    return out.view(batch, length, -1)
