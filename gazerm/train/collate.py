"""Training units → padded model inputs, in length-bucketed micro-batches.

The collate function receives a *window* of ``micro_batch_size × bucket_window`` units from
``iter_torch_batches``, tokenizes them, sorts them by length and cuts the window into
micro-batches, so each micro-batch is padded only to the longest of similar-length
sequences. Every window of the same size yields the same number of micro-batches, which
keeps all ranks in step.

Pairwise micro-batches stack the chosen sequences first and the rejected ones after
(``2B`` rows), so one forward pass scores both sides; listwise micro-batches stack each list's
responses one list after another.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from gazerm.model.inputs import Sequence, SequenceEncoder


def _column(batch: dict[str, np.ndarray], name: str) -> list[np.ndarray]:
    return [np.asarray(value if value is not None else [], dtype=np.float32) for value in batch[name]]


class UnitCollator(NumpyBatchCollateFn):
    """``iter_torch_batches`` collate_fn: a window of units → a list of micro-batches.

    Each micro-batch is a dict with the padded model inputs plus ``sources`` (for per-source
    metrics) and, for pairwise units, ``margin``; for regression units, ``targets``; for listwise
    units, ``list_index`` ``(B, N)`` (each list's rows in the inputs, -1 = padding) and ``tiers``.
    """

    def __init__(self, tokenizer: Any, max_length: int, micro_batch_size: int, kind: str) -> None:
        self.encoder = SequenceEncoder(tokenizer, max_length)
        self.micro_batch_size = micro_batch_size
        self.kind = kind

    def _units(self, batch: dict[str, np.ndarray]) -> list[list[dict[str, np.ndarray]]]:
        """Per unit, its encoded sequences: [chosen, rejected], [rated response] or the ranked list."""
        prefixes = list(batch["prefix"])
        if self.kind == "listwise":
            sizes = [len(texts) for texts in batch["texts"]]
            sequences = [
                Sequence(prefix, text, *(np.asarray(values, np.float32) for values in inputs))
                for prefix, texts, *lists in zip(
                    prefixes,
                    batch["texts"],
                    batch["spans"],
                    batch["features"],
                    batch["implicit"],
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
                    Sequence(prefix, text, spans, features, implicit)
                    for prefix, text, spans, features, implicit in zip(
                        prefixes,
                        batch[f"{name}text"],
                        _column(batch, f"{name}spans"),
                        _column(batch, f"{name}features"),
                        _column(batch, f"{name}implicit"),
                        strict=True,
                    )
                ]
            )
            for name in names
        ]
        return [list(items) for items in zip(*sides, strict=True)]

    def __call__(self, batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        units = self._units(batch)
        lengths = [max(len(item["input_ids"]) for item in items) for items in units]
        order = np.argsort(lengths, kind="stable")
        return [
            self._micro_batch(batch, units, order[start : start + self.micro_batch_size])
            for start in range(0, len(order), self.micro_batch_size)
        ]

    def _micro_batch(
        self, batch: dict[str, np.ndarray], units: list[list[dict[str, np.ndarray]]], rows: np.ndarray
    ) -> dict[str, Any]:
        if self.kind == "listwise":
            # Lists stacked one after another; list_index says where each list's responses landed.
            micro = self.encoder.pad([item for row in rows for item in units[row]])
            width = max(len(units[row]) for row in rows)
            micro["list_index"] = torch.full((len(rows), width), -1, dtype=torch.long)
            micro["tiers"] = torch.zeros((len(rows), width), dtype=torch.long)
            offset = 0
            for slot, row in enumerate(rows):
                size = len(units[row])
                micro["list_index"][slot, :size] = torch.arange(offset, offset + size)
                micro["tiers"][slot, :size] = torch.as_tensor(np.asarray(batch["tiers"][row], dtype=np.int64))
                offset += size
        else:
            # Pairwise: all chosen sequences first, then all rejected ones (one forward scores both).
            sides = range(len(units[rows[0]]))
            micro = self.encoder.pad([units[row][side] for side in sides for row in rows])
            if self.kind == "pairwise":
                micro["margin"] = torch.tensor(np.asarray(batch["margin"], dtype=np.float32)[rows])
            else:
                targets = [np.asarray(batch["targets"][row], dtype=np.float32) for row in rows]
                micro["targets"] = torch.tensor(np.stack(targets))
        micro["sources"] = [str(batch["source"][row]) for row in rows]
        return micro
