from __future__ import annotations

import pytest
import torch

from gazerm.model.pooling import pool

# hidden[b, s] = 10 * b + s, H = 1, so a pooled value names the position it came from.
HIDDEN = (10 * torch.arange(2.0)[:, None] + torch.arange(4.0)).unsqueeze(-1)
RIGHT = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
LEFT = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])


@pytest.mark.parametrize(
    ("mask", "mode", "expected"),
    [
        (RIGHT, "last", [2.0, 11.0]),
        (LEFT, "last", [3.0, 13.0]),
        (RIGHT, "cls", [0.0, 10.0]),
        (LEFT, "cls", [1.0, 12.0]),
        (RIGHT, "mean", [1.0, 10.5]),
        (LEFT, "mean", [2.0, 12.5]),
        (RIGHT, "last_slot", [3.0, 13.0]),  # the reference code's classifier: padding or not
    ],
)
def test_pooling_picks_the_right_tokens(mask, mode, expected):
    assert pool(HIDDEN, mask, mode).squeeze(-1).tolist() == expected


@pytest.mark.parametrize(
    ("mode", "expected"), [("last", [3.0, 12.0]), ("cls", [2.0, 12.0]), ("mean", [2.5, 12.0])]
)
def test_pooling_ignores_a_gaze_prefix(mode, expected):
    # The first two slots are a concat gaze prefix: attended, but never pooled.
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 0]])
    assert pool(HIDDEN, mask, mode, text_offset=2).squeeze(-1).tolist() == expected


def test_unknown_pooling_is_an_error():
    with pytest.raises(ValueError, match="pooling"):
        pool(HIDDEN, RIGHT, "max")
