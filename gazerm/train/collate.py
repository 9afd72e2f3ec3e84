"""Training units → typed, padded micro-batches, in length-bucketed groups.

The collator owns the windowing (:class:`Windows`): it receives a *window* of ``micro_batch_size ×
bucket_window`` units (an Arrow table), renders each conversation with the prompt template, tokenizes,
sorts the units by length and cuts the window into micro-batches, so each micro-batch is padded only to
the longest of similar-length sequences. Every window of the same size yields the same number of
micro-batches, which keeps all ranks in step. Micro-batches of one window can be collated again as one
(:meth:`UnitCollator.merge`: ``run.merge_micro_batches``).

How a kind's units become one micro-batch is the loss kind's (``gazerm.train.kinds``); how text becomes
tokens and gaze is the model's input pipeline (``gazerm.model.pipeline``), the one scoring uses too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from gazerm.model.inputs import InputSpec
from gazerm.model.pipeline import InputPipeline
from gazerm.model.prefix_sharing import pair_tokens
from gazerm.train.batch import MicroBatch
from gazerm.train.kinds import LossSpec
from gazerm.train.kinds.base import Encoded, Window, floats

if TYPE_CHECKING:
    from gazerm.train.config import TrainJobConfig


@dataclass(frozen=True)
class Windows:
    """How units are grouped: windows of ``bucket_window`` micro-batches of ``micro_batch_size`` units,
    sorted by length within a window."""

    micro_batch_size: int
    bucket_window: int

    @classmethod
    def of(cls, config: TrainJobConfig) -> Windows:
        return cls(config.run.micro_batch_size, config.data.bucket_window)

    @property
    def size(self) -> int:
        """Units in a window."""
        return self.micro_batch_size * self.bucket_window

    def micro_batches(self, units: int) -> int:
        """Micro-batches ``units`` units give, window by window (only the last window may be short)."""
        return -(-units // self.micro_batch_size)


@dataclass(frozen=True, eq=False)
class CollatedWindow:
    """A training window's columns and its units' encoded sequences, which its micro-batches keep so
    that several of them can be collated again as one."""

    columns: Window
    units: list[list[Encoded]]

    def tokens(self, shared_prefix: bool = False) -> np.ndarray:
        """Each unit's tokens over all its sequences: what it costs the rank that trains on it. With
        ``shared_prefix`` (``model.pair_forward: shared``) the tokens its sequences all begin with, which
        the forward computes once, count once."""
        sequences = [[item["input_ids"] for item in items] for items in self.units]
        return np.array([_unit_tokens(unit, shared_prefix) for unit in sequences])

    def take(self, rows: np.ndarray) -> CollatedWindow:
        """The window of ``rows`` alone, in that order."""
        columns = {name: [values[row] for row in rows] for name, values in self.columns.items()}
        return CollatedWindow(columns, [self.units[row] for row in rows])


def _unit_tokens(sequences: list[np.ndarray], shared_prefix: bool) -> int:
    if shared_prefix:  # a pair (only the pairwise kind shares)
        chosen, rejected = sequences
        return pair_tokens(chosen, rejected)
    return sum(len(sequence) for sequence in sequences)


@dataclass(frozen=True, eq=False)
class Origin:
    """Where a training micro-batch's units sit: their window and their rows in it."""

    window: CollatedWindow
    rows: np.ndarray


class UnitCollator:
    """A window of units (Arrow table, ``train.units`` schema) → a list of :class:`MicroBatch`. With
    ``mergeable`` (``run.merge_micro_batches``), training micro-batches keep their :class:`Origin`, and
    so their window, for :meth:`merge`."""

    def __init__(
        self,
        pipeline: InputPipeline,
        loss: LossSpec,
        windows: Windows,
        mergeable: bool = False,
        shared_prefix: bool = False,
    ) -> None:
        self.pipeline = pipeline
        self.encoder = pipeline.encoder
        self.loss = loss
        self.windows = windows
        self.mergeable = mergeable
        self.shared_prefix = shared_prefix  # the model computes a unit's common prefix once

    @classmethod
    def for_job(
        cls, config: TrainJobConfig, inputs: InputSpec, loss: LossSpec, tokenizer: Any
    ) -> UnitCollator:
        """The collator of a training job: its model's inputs as ``inputs`` says, its loss, its windows."""
        pipeline = InputPipeline.from_spec(inputs, tokenizer, config.model)
        shared_prefix = loss.kind.shares_prefix(config.model)
        return cls(pipeline, loss, Windows.of(config), config.run.merge_micro_batches, shared_prefix)

    @property
    def window_size(self) -> int:
        return self.windows.size

    def encode_units(self, window: Window) -> list[list[Encoded]]:
        """Per unit, its encoded sequences: [chosen, rejected], [rated response] or the ranked list."""
        units = len(window["prompt"])
        heads = [
            self.encoder.prefix(context, prompt, floats(spans), floats(features))
            for context, prompt, spans, features in zip(
                window["context"],
                window["prompt"],
                window.get("prompt_spans") or [None] * units,
                window.get("prompt_features") or [None] * units,
                strict=True,
            )
        ]
        prefixes, prompts = [head for head, _ in heads], [prompt for _, prompt in heads]
        return self.loss.kind.encode(self.encoder, prefixes, window, prompts)

    def __call__(self, units_table: pa.Table) -> list[MicroBatch]:
        """A training window's micro-batches."""
        return self.cut(self.encode(units_table))

    def encode(self, units_table: pa.Table) -> CollatedWindow:
        """A window's units, tokenized: to be cut into micro-batches (or first dealt to the ranks,
        ``train.order``)."""
        window = units_table.to_pydict()
        return CollatedWindow(window, self.encode_units(window))

    def cut(self, collated: CollatedWindow) -> list[MicroBatch]:
        """A tokenized training window's micro-batches."""
        return self._cut(collated, keep_origin=self.mergeable)

    def collate(self, units: pa.Table) -> list[MicroBatch]:
        """All of ``units`` (a validation split, say), window after window in table order; the micro-batches
        keep no :class:`Origin` (a split's windows are not held for the whole run)."""
        size = self.window_size
        return [
            micro
            for start in range(0, units.num_rows, size)
            for micro in self._cut(self.encode(units.slice(start, size)), keep_origin=False)
        ]

    def merge(self, micro_batches: list[MicroBatch]) -> MicroBatch:
        """Training micro-batches of one window as one micro-batch of all their units, in their order."""
        first = micro_batches[0]
        if len(micro_batches) == 1:
            return first
        if not all(first.shares_window(micro) for micro in micro_batches):
            raise ValueError(
                "only training micro-batches cut from one window (run.merge_micro_batches) merge"
            )
        rows = np.concatenate([micro.origin.rows for micro in micro_batches])
        return self._micro_batch(first.origin.window, rows, keep_origin=True)

    def _cut(self, collated: CollatedWindow, keep_origin: bool) -> list[MicroBatch]:
        """The window's units sorted by length and cut into micro-batches of ``micro_batch_size``."""
        lengths = [max(len(item["input_ids"]) for item in items) for items in collated.units]
        order = np.argsort(lengths, kind="stable")
        size = self.windows.micro_batch_size
        starts = range(0, len(order), size)
        return [self._micro_batch(collated, order[start : start + size], keep_origin) for start in starts]

    def _micro_batch(self, collated: CollatedWindow, rows: np.ndarray, keep_origin: bool) -> MicroBatch:
        micro = self.loss.kind.micro_batch(self.encoder, collated.columns, collated.units, rows)
        if keep_origin:
            micro.origin = Origin(collated, rows)
        return micro
