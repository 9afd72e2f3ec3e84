"""What one training step feeds the model: the padded inputs and each unit's labels, as typed objects
that move to a device together."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING

import torch

from gazerm.model.inputs import ModelInputs

if TYPE_CHECKING:  # the collator builds micro-batches; a micro-batch only points back at its window
    from gazerm.train.collate import Origin


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
    # A training micro-batch's window and rows there: micro-batches of one window can be collated again
    # as one forward (``UnitCollator.merge``). None for the validation and test splits'.
    origin: Origin | None = field(default=None, repr=False, compare=False)

    def to(self, device: torch.device | str) -> MicroBatch:
        """Everything on ``device``: the engine's, before the forward (a collate output stays on the CPU)."""
        return MicroBatch(self.inputs.to(device), self.labels.to(device))

    def shares_window(self, other: MicroBatch) -> bool:
        """Whether both were cut from one training window (and so can be collated again as one)."""
        return (
            self.origin is not None and other.origin is not None and self.origin.window is other.origin.window
        )
