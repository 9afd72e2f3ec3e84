"""One vector per sequence from the backbone's hidden states, looking only at the text part."""

from __future__ import annotations

import torch

from gazerm.model.config import Pooling


def pool(
    hidden: torch.Tensor, attention_mask: torch.Tensor, mode: Pooling, text_offset: int = 0
) -> torch.Tensor:
    """``(B, S, H)`` → ``(B, H)`` over ``[:, text_offset:]`` (after a ``concat`` gaze prefix).

    - ``last``: the last attended token, the one a causal decoder has read everything before; found
      from the mask, so it is right for right *and* left padding.
    - ``cls``: the first attended token (``[CLS]`` for encoders, even when left-padded).
    - ``mean``: the mean over attended tokens.
    - ``last_slot``: the last slot of the padded row, padding or not. A transformers
      ``*ForSequenceClassification`` called with ``inputs_embeds`` and no ``input_ids`` (the reference
      code) cannot find the padding and reads this slot, so a right-padded row's reward comes from a
      padding slot, whose output depends on how long the batch's longest row is.
    """
    hidden, mask = hidden[:, text_offset:], attention_mask[:, text_offset:].long()
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if mode == "last":
        return hidden[rows, mask.shape[1] - 1 - mask.flip(-1).argmax(-1)]
    if mode == "cls":
        return hidden[rows, mask.argmax(-1)]
    if mode == "last_slot":
        return hidden[:, -1]
    if mode == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
    raise ValueError(f"unknown pooling {mode!r}")
