"""How an optimizer step's micro-batches run as forward passes.

``run.micro_batch_size`` is sized (``gazerm plan``) for its worst case: every sequence ``data.max_length``
tokens long. Real data is mostly shorter, so with ``run.merge_micro_batches`` consecutive micro-batches
of a step are collated again as one forward while their padded tokens (rows × longest row) stay within
that worst case: memory stays what was planned, and the forwards are fewer and fuller. Micro-batches
are merged only within one collator window, where the length bucketing has made them alike.

Every rank must run the same number of forwards in a step (ZeRO's collectives run in each backward, and
ZeRO-3's in each forward too), and each forward ends waiting for the slowest rank's. So the ranks group
alike: every one groups the largest shape any rank has at each position (:func:`forward_shapes`, reduced
over the ranks), so its ``i``-th forward holds its ``i``-th micro-batches, which dealt ranks
(``data.balance_ranks``) have made alike.
"""

from __future__ import annotations

from gazerm.train.batch import MicroBatch
from gazerm.train.config import TrainJobConfig
from gazerm.train.memory import SEQUENCES_PER_UNIT


def slot_budget(config: TrainJobConfig) -> int:
    """Padded tokens of the micro-batch ``gazerm plan`` sizes memory for: ``run.micro_batch_size`` units
    with every sequence ``data.max_length`` long."""
    return config.run.micro_batch_size * SEQUENCES_PER_UNIT[config.loss.kind] * config.data.max_length


def forward_shapes(micro_batches: list[MicroBatch]) -> list[list[int]]:
    """Each micro-batch's ``[rows, padded width, 1 where it does not share the previous one's window]``:
    what :func:`fewest_forwards` groups by (the ranks' largest, for forwards they all run alike)."""
    shapes = []
    for index, micro in enumerate(micro_batches):
        rows, width = micro.inputs.input_ids.shape
        new_window = index == 0 or not micro_batches[index - 1].shares_window(micro)
        shapes.append([rows, width, int(new_window)])
    return shapes


def fewest_forwards(shapes: list[list[int]], budget: int) -> list[list[int]]:
    """The micro-batches' indices in consecutive groups, each from one window and within ``budget`` padded
    tokens once collated together (``shapes``: :func:`forward_shapes`); greedy, so as few groups as their
    order allows. A micro-batch over the budget on its own (a listwise one of longer lists than planned)
    keeps a forward to itself."""
    groups: list[list[int]] = []
    rows = width = 0
    for index, (micro_rows, micro_width, new_window) in enumerate(shapes):
        if groups and not new_window:
            merged_rows, merged_width = rows + micro_rows, max(width, micro_width)
            if merged_rows * merged_width <= budget:
                groups[-1].append(index)
                rows, width = merged_rows, merged_width
                continue
        groups.append([index])
        rows, width = micro_rows, micro_width
    return groups
