"""How an optimizer step's micro-batches run as forward passes.

``run.micro_batch_size`` is sized (``gazerm plan``) for its worst case: every sequence ``data.max_length``
tokens long. Real data is mostly shorter, so with ``run.merge_micro_batches`` consecutive micro-batches
of a step are collated again as one forward while their padded tokens (rows × longest row) stay within
that worst case: memory stays what was planned, and the forwards are fewer and fuller. Micro-batches
are merged only within one collator window, where the length bucketing has made them alike.

Every rank must run the same number of forwards in a step (ZeRO's collectives run in each backward, and
ZeRO-3's in each forward too), so the ranks agree on the largest count and the others split theirs.
"""

from __future__ import annotations

from gazerm.train.batch import MicroBatch
from gazerm.train.config import TrainJobConfig
from gazerm.train.memory import SEQUENCES_PER_UNIT


def slot_budget(config: TrainJobConfig) -> int:
    """Padded tokens of the micro-batch ``gazerm plan`` sizes memory for: ``run.micro_batch_size`` units
    with every sequence ``data.max_length`` long."""
    return config.run.micro_batch_size * SEQUENCES_PER_UNIT[config.loss.kind] * config.data.max_length


def fewest_forwards(micro_batches: list[MicroBatch], budget: int) -> list[list[int]]:
    """The micro-batches' indices in consecutive groups, each from one window and within ``budget`` padded
    tokens once collated together; greedy, so as few groups as their order allows. A micro-batch over
    the budget on its own (a listwise one of longer lists than planned) keeps a forward to itself."""
    groups: list[list[int]] = []
    rows = width = 0
    for index, micro in enumerate(micro_batches):
        micro_rows, micro_width = micro.inputs.input_ids.shape
        if groups and micro_batches[groups[-1][0]].shares_window(micro):
            merged_rows, merged_width = rows + micro_rows, max(width, micro_width)
            if merged_rows * merged_width <= budget:
                groups[-1].append(index)
                rows, width = merged_rows, merged_width
                continue
        groups.append([index])
        rows, width = micro_rows, micro_width
    return groups


def split_into(groups: list[list[int]], count: int) -> list[list[int]]:
    """``groups`` split further, the largest first, until there are ``count`` of them (the most any rank
    needs); each stays consecutive."""
    groups = [list(group) for group in groups]
    while len(groups) < count:
        largest = max(range(len(groups)), key=lambda i: len(groups[i]))
        group = groups[largest]
        if len(group) < 2:
            raise ValueError(f"{sum(map(len, groups))} micro-batches cannot run as {count} forwards")
        half = len(group) // 2
        groups[largest : largest + 1] = [group[:half], group[half:]]
    return groups
