"""Training units → padded model inputs, in length-bucketed micro-batches.

The collate function receives a *window* of ``micro_batch_size × bucket_window`` units from
``iter_torch_batches``, tokenizes them, sorts them by length and cuts the window into
micro-batches, so each micro-batch is padded only to the longest of similar-length
sequences. Every window of the same size yields the same number of micro-batches, which
keeps all ranks in step.

Pairwise micro-batches stack the chosen sequences first and the rejected ones after
(``2B`` rows), so one forward pass scores both sides.
"""

from __future__ import annotations

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
    metrics) and, for pairwise units, ``margin``; for regression units, ``targets``.
    """

    def __init__(self, tokenizer: Any, max_length: int, micro_batch_size: int, kind: str) -> None:
        self.encoder = SequenceEncoder(tokenizer, max_length)
        self.micro_batch_size = micro_batch_size
        self.kind = kind

    def _sides(self, batch: dict[str, np.ndarray]) -> list[list[Sequence]]:
        prefixes = list(batch["prefix"])
        names = ("chosen_", "rejected_") if self.kind == "pairwise" else ("",)
        return [
            [
                Sequence(prefix, text, spans, features)
                for prefix, text, spans, features in zip(
                    prefixes,
                    batch[f"{name}text"],
                    _column(batch, f"{name}spans"),
                    _column(batch, f"{name}features"),
                    strict=True,
                )
            ]
            for name in names
        ]

    def __call__(self, batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        sides = [self.encoder.encode(sequences) for sequences in self._sides(batch)]
        lengths = np.max([[len(item["input_ids"]) for item in side] for side in sides], axis=0)
        order = np.argsort(lengths, kind="stable")
        targets = _column(batch, "targets") if self.kind != "pairwise" else []
        micro_batches = []
        for start in range(0, len(order), self.micro_batch_size):
            rows = order[start : start + self.micro_batch_size]
            micro = self.encoder.pad([side[row] for side in sides for row in rows])
            micro["sources"] = [str(batch["source"][row]) for row in rows]
            if self.kind == "pairwise":
                micro["margin"] = torch.tensor(np.asarray(batch["margin"], dtype=np.float32)[rows])
            else:
                micro["targets"] = torch.tensor(np.stack([targets[row] for row in rows]))
            micro_batches.append(micro)
        return micro_batches
