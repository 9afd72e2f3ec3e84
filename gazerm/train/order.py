"""The order a run trains on its units: seeded, different every epoch, the same for the same seed, and
derived from (epoch, micro-batch) alone, so a resumed run continues exactly where it stopped.

Ray Data's streaming split hands blocks to whichever rank asks first, so neither the order nor which
rank trains on what is the same twice, and a resume could only skip "about as many" micro-batches.
Here the driver lists the train split's blocks (Parquet row groups) with their unit counts once
(:func:`list_blocks`), and every rank derives its part of each epoch from the seed:

1. the blocks are permuted with a generator seeded by (seed, epoch);
2. the permuted stream of ``N`` units is cut into ``world_size`` equal contiguous ranges of
   ``N // world_size`` units (every rank trains the same number of micro-batches, so the DeepSpeed
   collectives stay in step; the remainder, fewer than ``world_size`` units, sits out that epoch, a
   different few each epoch);
3. each rank reads only the blocks overlapping its range and shuffles its units in chunks of
   ``shuffle_buffer`` units, seeded by (seed, epoch, rank);
4. the shuffled units are cut into the collator's windows (``train.collate.Windows``), which it turns
   into length-bucketed micro-batches.

Ranks whose shares differ in length wait for each other at every gradient exchange, so with
``data.balance_ranks`` (``EpochPlan.balance``) every rank reads all ranks' ranges instead, shuffled
alike (seeded by (seed, epoch), in chunks of ``shuffle_buffer`` units per rank), cuts them into windows
of ``world_size`` collator windows, tokenizes each and keeps its hand of it (:func:`dealt`): the units
dealt in rounds by the tokens the forward computes, so the ranks' ``i``-th micro-batches are alike and
their totals close.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gazerm.train.batch import MicroBatch
from gazerm.train.collate import CollatedWindow, UnitCollator, Windows
from gazerm.train.config import TrainJobConfig
from gazerm.train.kinds import LossSpec
from gazerm.train.units import ToUnits

# Windows read, shuffled and tokenized ahead of the one being trained on.
PREFETCH_WINDOWS = 2
_DONE = object()
T = TypeVar("T")


@dataclass(frozen=True)
class Block:
    """One Parquet row group of the train split and how many units it gives."""

    path: str
    row_group: int
    units: int


def list_blocks(paths: list[str], loss: LossSpec) -> list[Block]:
    """Every row group of ``paths`` with its unit count (label columns only), in file order."""
    blocks = []
    columns = loss.kind.label_columns(loss.num_outputs)
    for path in paths:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=columns)
            blocks.append(Block(path, group, loss.kind.count(table, loss.num_outputs)))
    return blocks


# How dealing ranks (``EpochPlan.balance``) share a window: :func:`dealt`'s rounds, by the tokens the
# forward computes. Runs before it dealt longest first by all tokens ("snake by tokens").
DEALING = "rounds by computed tokens"


def as_recorded_now(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's recorded layout with the keys added since, as the run that recorded it had them."""
    dealing = "snake by tokens" if saved.get("balance") else "none"
    return {"balance": False, "dealing": dealing, **saved}


@dataclass(frozen=True)
class EpochPlan:
    """What every rank agrees on: the blocks, the seed, the ranks, the shuffle buffer and whether the
    ranks deal their units (``balance``)."""

    blocks: tuple[Block, ...]
    seed: int
    world_size: int
    shuffle_buffer: int
    balance: bool = False

    @classmethod
    def of(cls, blocks: list[Block], config: TrainJobConfig) -> EpochPlan:
        """The plan of a job's train split (one rank per ``run.num_workers``)."""
        run = config.run
        balance = config.data.balance_ranks and run.num_workers > 1
        return cls(tuple(blocks), run.seed, run.num_workers, config.data.shuffle_buffer, balance)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "blocks": [asdict(block) for block in self.blocks]}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EpochPlan:
        return cls(**{**values, "blocks": tuple(Block(**block) for block in values["blocks"])})

    def layout(self, windows: Windows) -> dict[str, Any]:
        """What decides which unit lands in which micro-batch, this order and the collator's ``windows``:
        a resume is exact only under the same."""
        order = {k: v for k, v in asdict(self).items() if k != "blocks"}
        blocks = {"blocks": len(self.blocks), "units": sum(block.units for block in self.blocks)}
        return {**order, "dealing": DEALING if self.balance else "none", **asdict(windows), **blocks}

    @property
    def units_per_rank(self) -> int:
        return sum(block.units for block in self.blocks) // self.world_size

    def generator(self, *keys: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, *keys])

    def block_order(self, epoch: int) -> list[Block]:
        return [self.blocks[i] for i in self.generator(epoch).permutation(len(self.blocks))]

    @property
    def ranks_read(self) -> int:
        """How many ranks' shares each rank reads: all of them when dealing, else its own."""
        return self.world_size if self.balance else 1

    def shuffle_generator(self, epoch: int, rank: int) -> np.random.Generator:
        """Ranks that deal shuffle the same stream alike; others each their own share."""
        return self.generator(epoch) if self.balance else self.generator(epoch, rank)

    def rank_slices(self, epoch: int, rank: int) -> list[tuple[Block, int, int]]:
        """The (block, start, stop) unit ranges ``rank`` reads of ``epoch``, in stream order: its share, or
        every rank's when dealing."""
        share = self.units_per_rank
        begin, end = (0, share * self.world_size) if self.balance else (rank * share, (rank + 1) * share)
        slices, offset = [], 0
        for block in self.block_order(epoch):
            start, stop = max(begin - offset, 0), min(end - offset, block.units)
            if start < stop:
                slices.append((block, start, stop))
            offset += block.units
        return slices


class RankStream:
    """One rank's micro-batches of an epoch; ``skip`` drops the ones a resumed run already trained on,
    without tokenizing the windows it skips whole."""

    def __init__(self, plan: EpochPlan, rank: int, collator: UnitCollator) -> None:
        self.plan = plan
        self.rank = rank
        self.to_units = ToUnits(collator.loss)
        self.collator = collator

    def micro_batches(self, epoch: int, skip: int = 0) -> Iterator[MicroBatch]:
        """The epoch's micro-batches after the first ``skip``; the next windows are read, shuffled and
        tokenized in a background thread while the accelerator trains on this one."""
        for micro_batches in prefetched(self._collated(epoch, skip), PREFETCH_WINDOWS):
            yield from micro_batches

    def _collated(self, epoch: int, skip: int) -> Iterator[list[MicroBatch]]:
        per_window = self.collator.windows.bucket_window
        for index, window in enumerate(self.windows(epoch)):
            if (index + 1) * per_window <= skip:
                continue  # a full window gives exactly bucket_window micro-batches
            yield self.collator.cut(self.hand(window))[max(skip - index * per_window, 0) :]

    def windows(self, epoch: int) -> Iterator[pa.Table]:
        """The epoch's windows this rank reads (``ranks_read`` collator windows each)."""
        yield from _rechunk(self._shuffled_units(epoch), self.collator.window_size * self.plan.ranks_read)

    def hand(self, window: pa.Table) -> CollatedWindow:
        """A window tokenized, and where the ranks deal, this rank's hand of it."""
        collated = self.collator.encode(window)
        if not self.plan.balance:
            return collated
        costs = collated.tokens(self.collator.shared_prefix)
        return collated.take(dealt(costs, self.plan.world_size, self.rank))

    def _shuffled_units(self, epoch: int) -> Iterator[pa.Table]:
        generator = self.plan.shuffle_generator(epoch, self.rank)
        buffer = self.plan.shuffle_buffer * self.plan.ranks_read
        pending: list[pa.Table] = []
        for units in self._units(epoch):
            pending.append(units)
            if sum(t.num_rows for t in pending) >= buffer:
                yield _permuted(pending, generator)
                pending = []
        if pending:
            yield _permuted(pending, generator)

    def _units(self, epoch: int) -> Iterator[pa.Table]:
        for block, start, stop in self.plan.rank_slices(epoch, self.rank):
            units = self.to_units(pq.ParquetFile(block.path).read_row_group(block.row_group))
            if units.num_rows != block.units:
                raise RuntimeError(
                    f"{block.path} row group {block.row_group}: {units.num_rows} units, {block.units} when "
                    "the run was planned; the prepared shards changed under a running job"
                )
            yield units.slice(start, stop - start)


def prefetched(items: Iterator[T], depth: int) -> Iterator[T]:
    """``items``, produced up to ``depth`` ahead by a background thread; its error is raised here, and
    closing this generator early (the last step came mid-epoch) stops the thread and waits for it, so
    nothing else tokenizes while it still does."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry: tuple[Any, BaseException | None]) -> bool:
        """Put ``entry`` once there is room; False when the consumer has gone."""
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((_DONE, None))
        except BaseException as error:  # handed to the consumer, which raises it
            offer((_DONE, error))

    thread = threading.Thread(target=produce, name="gazerm-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def dealt(costs: np.ndarray, hands: int, hand: int) -> np.ndarray:
    """The rows of ``hand`` when rows are dealt to ``hands`` hands a round at a time, cheapest round first:
    each round's rows (the ``hands`` cheapest left) go costliest first to the hands holding the least so
    far. Every hand gets as many rows, one of each round, so as each hand's micro-batches are cut from its
    rows in order of length, the hands' ``i``-th micro-batches are alike; the hands' running totals
    never differ by more than a round's spread. Returned in window order; ``len(costs)`` is a multiple
    of ``hands`` (windows of the ranks' equal shares)."""
    held = np.zeros(hands)
    mine = []
    order = np.argsort(costs, kind="stable")
    for start in range(0, len(order), hands):
        round_ = order[start : start + hands][::-1]  # costliest first
        for row, seat in zip(round_, np.argsort(held, kind="stable"), strict=True):
            held[seat] += costs[row]
            if seat == hand:
                mine.append(row)
    return np.sort(np.array(mine, dtype=np.int64))


def _permuted(tables: list[pa.Table], generator: np.random.Generator) -> pa.Table:
    table = pa.concat_tables(tables)
    return table.take(generator.permutation(table.num_rows))


def _rechunk(tables: Iterator[pa.Table], size: int) -> Iterator[pa.Table]:
    """Tables of exactly ``size`` rows (the last one may be shorter) from a stream of any sizes."""
    pending: list[pa.Table] = []
    held = 0
    for table in tables:
        pending.append(table)
        held += table.num_rows
        while held >= size:
            joined = pa.concat_tables(pending)
            yield joined.slice(0, size)
            rest = joined.slice(size)
            pending, held = [rest], rest.num_rows
    if held:
        yield pa.concat_tables(pending)
