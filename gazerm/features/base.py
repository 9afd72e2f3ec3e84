"""What a gaze feature is, shared by every predictor, the recorded-data reader and the alignment.

Words are the unit of gaze: eye-tracking corpora (ZuCo, Provo, GECO) and the CMCL-2021 predictors
the paper builds on record one set of measures per whitespace-separated word, punctuation
included ("home?" is one word). :func:`word_spans` is that rule, and it is the only place it lives.

The five measures (per word, as in CMCL-2021 / "Seeing Eye to AI"):

- ``nFix``: number of fixations on the word;
- ``FFD``: first fixation duration (ms), the first fixation on the word in any pass;
- ``GPT``: go-past time (ms), all fixations from first entering the word until a word to its
  right is fixated, regressions to earlier words included;
- ``TRT``: total reading time (ms), all fixations on the word;
- ``fixProp``: share of readers who fixated the word at all.

Normalisation: raw values are divided by fixed reference constants (:data:`FEATURE_SCALES`),
roughly the 95th percentile of each measure in English reading corpora, so typical values lie in
[0, 1] whatever the batch, the predictor or the dataset. A per-batch or per-dataset
standardisation would make the same word's features depend on what it was batched with and
would differ between training and scoring; fixed constants keep them comparable everywhere.
Values above 1 are kept (a very long fixation is information, not noise).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

FEATURE_NAMES = ("nFix", "FFD", "GPT", "TRT", "fixProp")
N_FEATURES = len(FEATURE_NAMES)

# How a response's word gaze is stored (the ``gaze`` column of prepared shards): per word, its
# character span in the response and its N_FEATURES values.
GAZE_TYPE = pa.struct(
    [
        pa.field("word_spans", pa.list_(pa.list_(pa.int32(), 2))),
        pa.field("features", pa.list_(pa.list_(pa.float32(), N_FEATURES))),
    ]
)

# Reference constants: fixations, ms, ms, ms, proportion.
FEATURE_SCALES = np.array([4.0, 400.0, 1000.0, 800.0, 1.0], dtype=np.float32)

# Feature columns that are sums over a word's fixations (and so over its parts).
ADDITIVE_FEATURES = np.array([name in ("nFix", "GPT", "TRT") for name in FEATURE_NAMES])

_WORD = re.compile(r"\S+")


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character ``[start, end)`` of each word: maximal runs of non-whitespace, punctuation attached."""
    return [match.span() for match in _WORD.finditer(text)]


def normalise(raw: np.ndarray) -> np.ndarray:
    """Raw measures (counts, ms, proportion) in the last axis → the common scale, float32."""
    return (np.asarray(raw, dtype=np.float32) / FEATURE_SCALES).astype(np.float32)


@dataclass
class WordGaze:
    """Gaze for one text: one span and one row of the five normalised features per word."""

    spans: list[tuple[int, int]]
    features: np.ndarray  # (n_words, 5) float32, normalised with FEATURE_SCALES

    def __post_init__(self) -> None:
        if self.features.shape != (len(self.spans), N_FEATURES):
            raise ValueError(
                f"features must have shape ({len(self.spans)}, {N_FEATURES}), got {self.features.shape}"
            )


@runtime_checkable
class GazePredictor(Protocol):
    """Anything that gives per-word gaze for a batch of texts; ``name`` is stored as ``gaze_source``."""

    name: str

    def predict(self, texts: list[str]) -> list[WordGaze]: ...
