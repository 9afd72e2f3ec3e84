"""Training units → typed, padded micro-batches, in length-bucketed groups.

The collator owns the windowing (:class:`Windows`): it receives a *window* of ``micro_batch_size ×
bucket_window`` units (an Arrow table), renders each conversation with the prompt template, tokenizes,
sorts the units by length and cuts the window into micro-batches, so each micro-batch is padded only to
the longest of similar-length sequences. Every window of the same size yields the same number of
micro-batches, which keeps all ranks in step.

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


class UnitCollator:
    """A window of units (Arrow table, ``train.units`` schema) → a list of :class:`MicroBatch`."""

    def __init__(self, pipeline: InputPipeline, loss: LossSpec, windows: Windows) -> None:
        self.pipeline = pipeline
        self.encoder = pipeline.encoder
        self.loss = loss
        self.windows = windows

    @classmethod
    def for_job(
        cls, config: TrainJobConfig, inputs: InputSpec, loss: LossSpec, tokenizer: Any
    ) -> UnitCollator:
        """The collator of a training job: its model's inputs as ``inputs`` says, its loss, its windows."""
        return cls(InputPipeline.from_spec(inputs, tokenizer, config.model), loss, Windows.of(config))

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
        window = units_table.to_pydict()
        units = self.encode_units(window)
        lengths = [max(len(item["input_ids"]) for item in items) for items in units]
        order = np.argsort(lengths, kind="stable")
        size = self.windows.micro_batch_size
        return [
            self.loss.kind.micro_batch(self.encoder, window, units, order[start : start + size])
            for start in range(0, len(order), size)
        ]

    def collate(self, units: pa.Table) -> list[MicroBatch]:
        """All of ``units`` (a validation split, say), window after window in table order."""
        size = self.window_size
        return [micro for start in range(0, units.num_rows, size) for micro in self(units.slice(start, size))]
