"""The one Arrow schema every preference source is mapped into.

A row is one prompt with its candidate responses and whatever labels the source has:
explicit ``pairs`` (chosen/rejected indices), per-response ``scores`` (a scalar rating,
higher is better), multi-attribute ``attribute_scores``, or a ``ranking`` (best first).
Loaders always fill ``pairs`` when the labels imply an order, so every consumer that
trains pairwise can rely on them; ratings and rankings stay for regression/listwise losses.

Gaze features are added by ``gazerm prepare``: per response, the character span of each
word in the response text and that word's five normalised reading measures. They are
stored per word (not per token) so one prepared dataset serves any tokenizer; the
word → sub-token alignment happens when batches are built (``gazerm.features.alignment``).
``prompt_gaze`` holds the same for the prompt text (the ``reference`` gaze layout reads it); it is the
column after ``implicit``, and shards written before it existed have none, which readers take as no prompt
gaze. ``group`` names who gave the labels (a study's worker id): grouped splits keep each group in one
split, so no annotator is in both train and test; it is the last column, absent from older shards.

Implicit behaviour features (IFLLM-style dwell time, scrolling, mouse movement, recorded
fixations; ``gazerm.features.implicit``) are joined in by ``prepare`` from session logs: per
response a vector in ``IMPLICIT_FEATURE_NAMES`` order, or null where no session saw it. A source that
recorded behaviour itself (IFLLM's release) fills ``implicit`` and ``gaze`` on its examples instead
(``PreferenceExample.implicit``/``recorded_gaze``); the manifest names that source's features.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from gazerm.features.base import GAZE_TYPE, N_FEATURES, WordGaze

SCHEMA_VERSION = 2

LABEL_KINDS = ("pairwise", "rating", "ranking")

PAIR_TYPE = pa.struct(
    [
        pa.field("chosen", pa.int32(), nullable=False),
        pa.field("rejected", pa.int32(), nullable=False),
        pa.field("margin", pa.float32()),
    ]
)

TURN_TYPE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])

PREFERENCE_SCHEMA = pa.schema(
    [
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
        pa.field("domain", pa.string()),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("context", pa.list_(TURN_TYPE)),
        pa.field("responses", pa.list_(pa.string()), nullable=False),
        pa.field("label_kind", pa.string(), nullable=False),
        pa.field("pairs", pa.list_(PAIR_TYPE)),
        pa.field("scores", pa.list_(pa.float32())),
        pa.field("attribute_names", pa.list_(pa.string())),
        pa.field("attribute_scores", pa.list_(pa.list_(pa.float32()))),
        pa.field("ranking", pa.list_(pa.int32())),
        pa.field("gaze", pa.list_(GAZE_TYPE)),
        pa.field("gaze_source", pa.string()),
        pa.field("implicit", pa.list_(pa.list_(pa.float32()))),
        pa.field("prompt_gaze", GAZE_TYPE),
        pa.field("group", pa.string()),
    ],
    metadata={"gazerm.schema_version": str(SCHEMA_VERSION)},
)


@dataclass
class Pair:
    chosen: int
    rejected: int
    margin: float | None = None


@dataclass
class PreferenceExample:
    """One prompt with candidate responses and labels; ``to_row`` gives a schema row.

    ``context`` holds earlier conversation turns (role/content) when the source is a
    dialogue; ``prompt`` is always the final user message the responses answer.
    ``source_file``/``source_row`` point back to where the example came from, so every
    error and every quarantined row can be traced to the input. A source that recorded how people read
    the responses gives, per response, an ``implicit`` feature vector and its ``recorded_gaze`` (None
    where that response has none); ``to_row`` writes them to the ``implicit`` and ``gaze`` columns, the
    gaze with ``gaze_source`` ``recorded:<source>``.
    """

    source: str
    source_file: str
    source_row: int
    prompt: str
    responses: list[str]
    label_kind: str
    pairs: list[Pair] = field(default_factory=list)
    scores: list[float] | None = None
    attribute_names: list[str] | None = None
    attribute_scores: list[list[float]] | None = None
    ranking: list[int] | None = None
    context: list[dict[str, str]] = field(default_factory=list)
    domain: str | None = None
    group: str | None = None
    implicit: list[list[float] | None] | None = None
    recorded_gaze: list[WordGaze | None] | None = None

    @property
    def example_id(self) -> str:
        """Stable id from content, so re-running ``prepare`` gives the same ids and splits."""
        digest = hashlib.sha256()
        for part in (self.source, self.domain or "", self.prompt, *self.responses, str(self.source_row)):
            digest.update(part.encode("utf-8"))
            digest.update(b"\x00")
        return digest.hexdigest()[:16]

    def to_row(self) -> dict[str, Any]:
        return {
            "example_id": self.example_id,
            "source": self.source,
            "source_file": self.source_file,
            "source_row": self.source_row,
            "domain": self.domain,
            "prompt": self.prompt,
            "context": self.context,
            "responses": self.responses,
            "label_kind": self.label_kind,
            "pairs": [{"chosen": p.chosen, "rejected": p.rejected, "margin": p.margin} for p in self.pairs],
            "scores": self.scores,
            "attribute_names": self.attribute_names,
            "attribute_scores": self.attribute_scores,
            "ranking": self.ranking,
            "gaze": None if self.recorded_gaze is None else [_gaze_value(g) for g in self.recorded_gaze],
            "gaze_source": None if self.recorded_gaze is None else f"recorded:{self.source}",
            "implicit": self.implicit,
            "prompt_gaze": None,
            "group": self.group,
        }


def _gaze_value(gaze: WordGaze | None) -> dict[str, Any]:
    """A ``GAZE_TYPE`` value; a response nobody read has no words (as ``recorded_join`` writes it)."""
    gaze = gaze or WordGaze([], np.zeros((0, N_FEATURES), np.float32))
    return {"word_spans": [list(span) for span in gaze.spans], "features": gaze.features.tolist()}


def pairs_from_scores(scores: list[float], with_margin: bool = True) -> list[Pair]:
    """All ordered pairs (i better than j) implied by scalar scores; ties give no pair."""
    pairs = []
    for i, score_i in enumerate(scores):
        for j, score_j in enumerate(scores):
            if score_i > score_j:
                pairs.append(Pair(i, j, float(score_i - score_j) if with_margin else None))
    return pairs


def pairs_from_ranking(ranking: list[int]) -> list[Pair]:
    """All pairs implied by a best-first ranking of response indices."""
    return [Pair(better, worse) for k, better in enumerate(ranking) for worse in ranking[k + 1 :]]


def examples_to_table(examples: list[PreferenceExample]) -> pa.Table:
    return pa.Table.from_pylist([example.to_row() for example in examples], schema=PREFERENCE_SCHEMA)
