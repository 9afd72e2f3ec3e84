"""Training units → typed, padded micro-batches, in length-bucketed groups.

The collator receives a *window* of ``micro_batch_size × bucket_window`` units (an Arrow table),
renders each conversation with the prompt template, tokenizes, sorts the units by length and cuts the
window into micro-batches, so each micro-batch is padded only to the longest of similar-length
sequences. Every window of the same size yields the same number of micro-batches, which keeps all
ranks in step.

Pairwise micro-batches stack the chosen sequences first and the rejected ones after (``2B`` rows), so
one forward pass scores both sides; listwise micro-batches stack each list's responses one list after
another.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from itertools import pairwise
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from gazerm.model.inputs import ModelInputs, PromptResponse, SequenceEncoder
from gazerm.model.templates import PromptTemplate


@dataclass
class UnitLabels:
    """What the loss and the metrics know of a micro-batch's ``B`` units besides the model inputs."""

    sources: list[str]  # (B,) each unit's source, for per-source metrics
    margin: torch.Tensor | None = None  # (B,) pairwise score margins (0 where the source has none)
    targets: torch.Tensor | None = None  # (B, num_outputs) regression targets
    list_index: torch.Tensor | None = None  # (B, N) listwise: each list's rows in the inputs, -1 = padding
    tiers: torch.Tensor | None = None  # (B, N) listwise: 0 = best, ties share a tier

    def to(self, device: torch.device | str) -> UnitLabels:
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)

    @property
    def num_units(self) -> int:
        return len(self.sources)


@dataclass
class MicroBatch:
    """One micro-batch: the model inputs and the units' labels. The inputs hold ``2B`` rows for pairwise
    units (chosen rows, then rejected rows), ``B`` for regression and one row per listed response for
    listwise units."""

    inputs: ModelInputs
    labels: UnitLabels

    def to(self, device: torch.device | str) -> MicroBatch:
        """Everything on ``device``: the engine's, before the forward (a collate output stays on the CPU)."""
        return MicroBatch(self.inputs.to(device), self.labels.to(device))


def _floats(values: Any) -> np.ndarray:
    return np.asarray(values if values is not None else [], dtype=np.float32)


class UnitCollator:
    """A window of units (Arrow table, ``train.units`` schema) → a list of :class:`MicroBatch`."""

    def __init__(
        self,
        tokenizer: Any,
        max_length: int,
        micro_batch_size: int,
        kind: str,
        template: PromptTemplate | None = None,
    ) -> None:
        self.encoder = SequenceEncoder(tokenizer, max_length, template)
        self.micro_batch_size = micro_batch_size
        self.kind = kind

    def _units(self, window: dict[str, list]) -> list[list[dict[str, np.ndarray]]]:
        """Per unit, its encoded sequences: [chosen, rejected], [rated response] or the ranked list."""
        template = self.encoder.template
        prefixes = [
            template.prefix(context, prompt)
            for context, prompt in zip(window["context"], window["prompt"], strict=True)
        ]
        if self.kind == "listwise":
            sizes = [len(texts) for texts in window["texts"]]
            sequences = [
                PromptResponse(prefix, text, *(_floats(values) for values in inputs))
                for prefix, texts, *lists in zip(
                    prefixes,
                    window["texts"],
                    window["spans"],
                    window["features"],
                    window["implicit"],
                    strict=True,
                )
                for text, *inputs in zip(texts, *lists, strict=True)
            ]
            encoded = self.encoder.encode(sequences)
            bounds = np.cumsum([0, *sizes])
            return [encoded[start:end] for start, end in pairwise(bounds)]
        names = ("chosen_", "rejected_") if self.kind == "pairwise" else ("",)
        sides = [
            self.encoder.encode(
                [
                    PromptResponse(prefix, text, _floats(spans), _floats(features), _floats(implicit))
                    for prefix, text, spans, features, implicit in zip(
                        prefixes,
                        window[f"{name}text"],
                        window[f"{name}spans"],
                        window[f"{name}features"],
                        window[f"{name}implicit"],
                        strict=True,
                    )
                ]
            )
            for name in names
        ]
        return [list(items) for items in zip(*sides, strict=True)]

    def __call__(self, units_table: pa.Table) -> list[MicroBatch]:
        window = units_table.to_pydict()
        units = self._units(window)
        lengths = [max(len(item["input_ids"]) for item in items) for items in units]
        order = np.argsort(lengths, kind="stable")
        return [
            self._micro_batch(window, units, order[start : start + self.micro_batch_size])
            for start in range(0, len(order), self.micro_batch_size)
        ]

    def _micro_batch(
        self, window: dict[str, list], units: list[list[dict[str, np.ndarray]]], rows: np.ndarray
    ) -> MicroBatch:
        sources = [str(window["source"][row]) for row in rows]
        if self.kind == "listwise":
            # Lists stacked one after another; list_index says where each list's responses landed.
            inputs = self.encoder.pad([item for row in rows for item in units[row]])
            width = max(len(units[row]) for row in rows)
            list_index = torch.full((len(rows), width), -1, dtype=torch.long)
            tiers = torch.zeros((len(rows), width), dtype=torch.long)
            offset = 0
            for slot, row in enumerate(rows):
                size = len(units[row])
                list_index[slot, :size] = torch.arange(offset, offset + size)
                tiers[slot, :size] = torch.as_tensor(window["tiers"][row], dtype=torch.long)
                offset += size
            return MicroBatch(inputs, UnitLabels(sources, list_index=list_index, tiers=tiers))
        # Pairwise: all chosen sequences first, then all rejected ones (one forward scores both).
        sides = range(len(units[rows[0]]))
        inputs = self.encoder.pad([units[row][side] for side in sides for row in rows])
        if self.kind == "pairwise":
            margin = torch.tensor([window["margin"][row] for row in rows], dtype=torch.float32)
            return MicroBatch(inputs, UnitLabels(sources, margin=margin))
        targets = torch.tensor(np.stack([_floats(window["targets"][row]) for row in rows]))
        return MicroBatch(inputs, UnitLabels(sources, targets=targets))
