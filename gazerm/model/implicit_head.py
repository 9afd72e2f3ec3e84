"""The implicit-feedback head: a response's behaviour features (IFLLM-style dwell, scroll, mouse, fixations)
→ a term added to its reward, next to what the text gives."""

from __future__ import annotations

import torch
from torch import nn


class ImplicitHead(nn.Module):
    """Linear → ReLU → Dropout → Linear over ``(B, in_features)`` features, zero where a response has none.

    A separate additive term (rather than features mixed into the text's hidden state) keeps a response
    without session logs scored by its text alone, exactly as a text-only model would score it.
    """

    def __init__(self, in_features: int, hidden: int, num_outputs: int, dropout: float):
        super().__init__()
        self.in_features = in_features
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_outputs)
        )

    def forward(self, features: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        if features.shape[-1] != self.in_features:
            raise ValueError(
                f"the implicit head reads {self.in_features} behaviour features per response, these rows "
                f"have {features.shape[-1]}: score with data prepared like the model's training data"
            )
        term = self.net(features.to(self.net[0].weight.dtype))
        return term * present.to(term.dtype).unsqueeze(-1)
