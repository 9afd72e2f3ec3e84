"""One forward per pair: the prompt a pair's chosen and rejected sequences both begin with runs once.

A pairwise micro-batch holds ``P`` chosen rows, then the ``P`` rejected rows of the same pairs. Both
sequences of a pair begin with the same slots (the rendered prompt), so a joint or separate forward
computes that common prefix twice. Here each pair is laid out as one sequence: the common prefix, the
chosen side's own slots, then the rejected side's own slots, whose position ids go on from the prefix as
they would in its own row. A 4D mask lets every slot attend causally within its pair, except that the
rejected side's own slots never see the chosen side's. In a causal decoder a slot's hidden state depends
only on the slots it attends to and their positions, so every slot's hidden state is the one its own row
would give (to float error), for ``prefix + chosen + rejected`` slots instead of twice the padded length.

The common prefix is read off the fused inputs: the leading attended slots whose embedding and position
are equal on both sides. Whatever makes them differ (a token the tokenizer merged across the prompt's
end, gaze measured on one side only) shortens the prefix; it never shares a slot that differs.

Shapes: ``B = 2P`` rows of ``S`` fused slots and hidden size ``H``; ``R`` rows of ``W`` slots each, ``N``
slots computed, ``M`` attended slots of the batch (``M - N`` of them shared prefix slots of rejected rows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from gazerm.model.fusion import FusedInputs
from gazerm.model.packing import PackedInputs, first_fit

# What each slot of a pair's sequence is: the mask keeps REJECTED slots from attending to CHOSEN ones.
PREFIX, CHOSEN, REJECTED = 0, 1, 2


def common_prefix(first: torch.Tensor, second: torch.Tensor) -> int:
    """How many leading rows ``(n, D)`` and ``(m, D)`` have equal."""
    length = min(len(first), len(second))
    differ = (first[:length] != second[:length]).any(-1).nonzero()
    return int(differ[0]) if len(differ) else length


def pair_tokens(chosen: Sequence[int], rejected: Sequence[int]) -> int:
    """The slots a pair of token sequences computes run as one sequence: both sides, their common prefix
    once (what a pair costs a shared forward)."""
    common = common_prefix(torch.as_tensor(chosen)[:, None], torch.as_tensor(rejected)[:, None])
    return len(chosen) + len(rejected) - common


def share_prefixes(
    fused: FusedInputs, widths: Callable[[list[int]], int] | None = None
) -> tuple[PackedInputs, list[int]]:
    """``fused``'s pairs as one sequence each, in rows of ``W`` slots: one pair a row (``W`` its longest
    pair), or packed first-fit into rows as wide as ``widths`` says for the pairs' sizes in slots.
    Returns the rows (with their ``(R, 1, W, W)`` boolean mask, True where a slot may attend) and each
    pair's common prefix length in slots."""
    batch, length, hidden = fused.inputs_embeds.shape
    if batch % 2:
        raise ValueError(f"a pairwise batch has chosen rows then rejected rows; got {batch} rows")
    pairs, device = batch // 2, fused.inputs_embeds.device
    attended = [row.nonzero().squeeze(-1) for row in fused.attention_mask.cpu()]
    # A slot is its embedding and its position: two sides share it only if both are equal.
    detached = fused.inputs_embeds.detach()
    keys = torch.cat([detached, fused.position_ids.unsqueeze(-1).to(detached)], -1)
    prefixes = [
        common_prefix(keys[pair, attended[pair]], keys[pairs + pair, attended[pairs + pair]])
        for pair in range(pairs)
    ]
    sizes = [len(attended[p]) + len(attended[pairs + p]) - prefixes[p] for p in range(pairs)]
    if widths is None:
        width = max(sizes)
        places, room = [(p, 0) for p in range(pairs)], [width - s for s in sizes]
    else:
        width = widths(sizes)
        places, room = first_fit(sizes, width)

    padded_slots, packed_slots, computed_from, computed_to = [], [], [], []
    part = torch.full((len(room), width), PREFIX, dtype=torch.long)
    pair_of = torch.full((len(room), width), -1, dtype=torch.long)  # the rows' tails: -1
    for pair, ((row, offset), prefix) in enumerate(zip(places, prefixes, strict=True)):
        chosen, rejected = attended[pair], attended[pairs + pair]
        start = row * width + offset
        chosen_at = start + torch.arange(len(chosen))
        rejected_at = torch.cat(
            [chosen_at[:prefix], start + len(chosen) + torch.arange(len(rejected) - prefix)]
        )
        padded_slots += [pair * length + chosen, (pairs + pair) * length + rejected]
        packed_slots += [chosen_at, rejected_at]
        computed_from += [pair * length + chosen, (pairs + pair) * length + rejected[prefix:]]
        computed_to += [chosen_at, rejected_at[prefix:]]
        size = sizes[pair]
        pair_of[row, offset : offset + size] = pair
        part[row, offset + prefix : offset + len(chosen)] = CHOSEN
        part[row, offset + len(chosen) : offset + size] = REJECTED

    source = torch.cat(computed_from).to(device)
    target = torch.cat(computed_to).to(device)
    embeds = fused.inputs_embeds.reshape(batch * length, hidden).index_select(0, source)
    rows_embeds = embeds.new_zeros(len(room) * width, hidden).index_copy(0, target, embeds)
    tail_start = width - torch.tensor(room, device=device).unsqueeze(1)
    positions = (torch.arange(width, device=device) - tail_start).clamp(min=0)  # the tails' positions
    positions.view(-1)[target] = fused.position_ids.reshape(-1)[source]
    rows = PackedInputs(
        rows_embeds.view(len(room), width, hidden),
        positions,
        torch.cat(padded_slots).to(device),
        torch.cat(packed_slots).to(device),
        (batch, length),
        attention_mask=pair_mask(pair_of.to(device), part.to(device)),
    )
    return rows, prefixes


def pair_mask(pair_of: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
    """``(R, 1, W, W)`` bool from each slot's pair (``(R, W)``, -1 for a row's tail) and part: a slot
    attends to the slots of its own pair (or tail) up to itself, a REJECTED slot to no CHOSEN one."""
    width = pair_of.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=pair_of.device).tril()
    same_pair = pair_of.unsqueeze(2) == pair_of.unsqueeze(1)
    crossing = (part.unsqueeze(2) == REJECTED) & (part.unsqueeze(1) == CHOSEN)
    return (same_pair & causal & ~crossing).unsqueeze(1)
