"""The paper's gaze feature projector: per-token reading measures → the backbone's embedding space."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class GazeProjector(nn.Module):
    """Select the used feature columns of a ``(B, T, 5)`` gaze tensor and map them to ``(B, T, out_dim)``.

    Linear → ReLU → Dropout(p1) → Linear → Dropout(p2), the two dropout rates of the paper's
    projector. Unused columns are dropped before the first layer, so they cannot leak in.

    ``layer_norms`` (the ``reference`` gaze layout) adds the two LayerNorms of the paper's official code:
    one over the hidden layer before its ReLU, and one over the output (its ``norm_layer_fix``). Without
    them the parameter names are those of every gazerm model saved before (``net.0``, ``net.3``).
    """

    def __init__(
        self,
        features_used: Sequence[int],
        hidden: int,
        out_dim: int,
        dropouts: tuple[float, float],
        layer_norms: bool = False,
    ):
        super().__init__()
        columns = used_columns(features_used)
        # Derived from the config, so not persisted: checkpoints hold only the learned layers.
        self.register_buffer("columns", columns, persistent=False)
        layers: list[nn.Module] = [nn.Linear(len(columns), hidden)]
        if layer_norms:
            layers.append(nn.LayerNorm(hidden))
        layers += [nn.ReLU(), nn.Dropout(dropouts[0]), nn.Linear(hidden, out_dim), nn.Dropout(dropouts[1])]
        self.net = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(out_dim) if layer_norms else None

    def forward(self, gaze: torch.Tensor) -> torch.Tensor:
        selected = gaze.index_select(-1, self.columns).to(self.net[0].weight.dtype)
        projected = self.net(selected)
        return projected if self.norm is None else self.norm(projected)


def used_columns(features_used: Sequence[int]) -> torch.Tensor:
    """The indices of the flagged features, ``(n_used,)`` long."""
    columns = [i for i, flag in enumerate(features_used) if flag]
    if not columns:
        raise ValueError("GazeProjector needs at least one used feature")
    return torch.tensor(columns, dtype=torch.long)
