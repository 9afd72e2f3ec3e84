"""Training units → typed, padded micro-batches, in length-bucketed groups.

The collator receives a *window* of ``micro_batch_size × bucket_window`` units (an Arrow table),
renders each conversation with the prompt template, tokenizes, sorts the units by length and cuts the
window into micro-batches, so each micro-batch is padded only to the longest of similar-length
sequences. Every window of the same size yields the same number of micro-batches, which keeps all
ranks in step.

How a kind's units become one micro-batch is the loss kind's (``gazerm.train.kinds``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from gazerm.model.config import GazeSpread, LossKindName, TruncationSide
from gazerm.model.inputs import SequenceEncoder
from gazerm.model.templates import PromptTemplate, build_template
from gazerm.train.batch import MicroBatch
from gazerm.train.kinds import loss_kind
from gazerm.train.kinds.base import Encoded, Window, floats

if TYPE_CHECKING:
    from gazerm.train.config import TrainJobConfig


class UnitCollator:
    """A window of units (Arrow table, ``train.units`` schema) → a list of :class:`MicroBatch`."""

    def __init__(
        self,
        tokenizer: Any,
        max_length: int,
        micro_batch_size: int,
        kind: LossKindName,
        template: PromptTemplate | None = None,
        prompt_gaze: bool = False,
        truncation_side: TruncationSide = "left",
        gaze_spread: GazeSpread = "additive",
    ) -> None:
        self.encoder = SequenceEncoder(
            tokenizer, max_length, template, prompt_gaze, truncation_side, gaze_spread
        )
        self.micro_batch_size = micro_batch_size
        self.kind = loss_kind(kind)

    @classmethod
    def for_job(cls, config: TrainJobConfig, tokenizer: Any) -> UnitCollator:
        """The collator a training job's settings describe (token budget, template, batch, loss kind)."""
        return cls(
            tokenizer,
            config.data.max_length,
            config.run.micro_batch_size,
            config.loss.kind,
            build_template(config.data.template, tokenizer),
            prompt_gaze=config.model.gazes_prompt,
            truncation_side=config.model.truncation_side,
            gaze_spread=config.model.gaze_spread,
        )

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
        return self.kind.encode(self.encoder, prefixes, window, prompts)

    def __call__(self, units_table: pa.Table) -> list[MicroBatch]:
        window = units_table.to_pydict()
        units = self.encode_units(window)
        lengths = [max(len(item["input_ids"]) for item in items) for items in units]
        order = np.argsort(lengths, kind="stable")
        return [
            self.kind.micro_batch(self.encoder, window, units, order[start : start + self.micro_batch_size])
            for start in range(0, len(order), self.micro_batch_size)
        ]
