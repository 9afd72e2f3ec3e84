"""The paper's gaze feature projector: per-token reading measures → the backbone's embedding space."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class GazeProjector(nn.Module):
    """Select the used feature columns of a ``(B, T, 5)`` gaze tensor and map them to ``(B, T, out_dim)``.

    Linear → ReLU → Dropout(p1) → Linear → Dropout(p2), the two dropout rates of the paper's
    projector. Unused columns are dropped before the first layer, so they cannot leak in.
    """

    def __init__(
        self, features_used: Sequence[int], hidden: int, out_dim: int, dropouts: tuple[float, float]
    ):
        super().__init__()
        columns = used_columns(features_used)
        # Derived from the config, so not persisted: checkpoints hold only the learned layers.
        self.register_buffer("columns", columns, persistent=False)
        self.net = nn.Sequential(
            nn.Linear(len(columns), hidden),
            nn.ReLU(),
            nn.Dropout(dropouts[0]),
            nn.Linear(hidden, out_dim),
            nn.Dropout(dropouts[1]),
        )

    def forward(self, gaze: torch.Tensor) -> torch.Tensor:
        selected = gaze.index_select(-1, self.columns).to(self.net[0].weight.dtype)
        return self.net(selected)


def used_columns(features_used: Sequence[int]) -> torch.Tensor:
    """The indices of the flagged features, ``(n_used,)`` long."""
    columns = [i for i, flag in enumerate(features_used) if flag]
    if not columns:
        raise ValueError("GazeProjector needs at least one used feature")
    return torch.tensor(columns, dtype=torch.long)
