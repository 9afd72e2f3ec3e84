"""Word gaze → sub-token gaze for any Hugging Face fast tokenizer, from character offsets alone.

Gaze is stored per word (``gazerm.features.base``) so one dataset serves every tokenizer; this
module maps it onto the tokens a model actually sees. The rule:

- A token belongs to the first word it overlaps by at least one character. Byte-level BPE tokens
  (GPT-2, Llama-3, RoBERTa) and SentencePiece tokens often carry the preceding space in their
  offsets (``" home"`` → ``(k-1, k+4)``); that space lies outside every word span, so it does not
  move the token to the previous word. Empty tokens (special tokens, offset ``(0, 0)``) and
  tokens made of whitespace only overlap no word.
- ``nFix``, ``GPT`` and ``TRT`` are sums over a word's fixations, so they are divided equally
  over the word's tokens: summed back over the tokens they give the word's value, whatever the
  tokenizer. ``FFD`` (a single duration) and ``fixProp`` (a share of readers) are copied, unless
  ``divide_all`` (the paper's code divides all five, ``ModelConfig.gaze_spread: all``).
- Tokens overlapping no word — special tokens, the prompt (everything before ``char_shift``),
  whitespace — get zeros and ``mask=False``.

The other direction, a trained predictor's token outputs → word values, takes each word's *first*
sub-token (:func:`first_tokens`, :func:`word_values`): such models are trained with a word's label on
its first sub-token only, so the others' outputs carry no trained meaning. :func:`offsets_tokenizer`
loads the fast tokenizer both directions need.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gazerm.errors import ConfigError
from gazerm.features.base import ADDITIVE_FEATURES, N_FEATURES


def offsets_tokenizer(path: str | Path) -> Any:
    """The tokenizer saved at ``path``; a fast one, since only those give character offsets."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.is_fast:
        raise ConfigError(f"{path}: a fast tokenizer is needed for character offsets")
    return tokenizer


def token_word_index(
    offsets: Sequence[Sequence[int]] | np.ndarray,
    spans: Sequence[Sequence[int]] | np.ndarray,
    char_shift: int = 0,
) -> np.ndarray:
    """(T,) index of the word each token belongs to, -1 for none; spans are relative to ``char_shift``."""
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    words = np.asarray(spans, dtype=np.int64).reshape(-1, 2) + char_shift
    if len(words) == 0:
        return np.full(len(offsets), -1, dtype=np.int64)
    starts, ends = offsets[:, 0], offsets[:, 1]
    # First word ending after the token starts; spans are sorted and disjoint, so ends are too.
    candidate = np.minimum(np.searchsorted(words[:, 1], starts, side="right"), len(words) - 1)
    overlaps = (ends > starts) & (words[candidate, 0] < ends) & (words[candidate, 1] > starts)
    return np.where(overlaps, candidate, -1)


def token_gaze(
    offsets: Sequence[Sequence[int]] | np.ndarray,
    spans: Sequence[Sequence[int]] | np.ndarray,
    features: np.ndarray,
    char_shift: int = 0,
    divide_all: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(T, 5) float32 token features and (T,) bool mask of the tokens that carry gaze (see module doc)."""
    word = token_word_index(offsets, spans, char_shift)
    mask = word >= 0
    out = np.zeros((len(word), N_FEATURES), dtype=np.float32)
    if not mask.any():
        return out, mask
    owners = word[mask]
    values = np.asarray(features, dtype=np.float32)[owners]
    pieces = np.bincount(owners, minlength=len(features))[owners].astype(np.float32)
    values[:, slice(None) if divide_all else ADDITIVE_FEATURES] /= pieces[:, None]
    out[mask] = values
    return out, mask


def first_tokens(offsets: Iterable[Sequence[int]], spans: np.ndarray) -> np.ndarray:
    """(n_words,) index of each word's first sub-token, -1 for a word no token overlaps."""
    word = token_word_index(np.asarray(list(offsets), dtype=np.int64).reshape(-1, 2), spans)
    first = np.full(len(spans), -1, dtype=np.int64)
    tokens = np.flatnonzero(word >= 0)
    words, position = np.unique(word[tokens], return_index=True)
    first[words] = tokens[position]
    return first


def word_values(token_values: np.ndarray, first: np.ndarray) -> np.ndarray:
    """(n_words, ...) each word's first sub-token's row of ``token_values``; zeros where it has none."""
    values = np.zeros((len(first), *token_values.shape[1:]), dtype=np.float32)
    has = first >= 0
    values[has] = token_values[first[has]]
    return values
