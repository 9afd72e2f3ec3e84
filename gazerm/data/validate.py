"""Checks every loaded example must pass before it reaches a shard.

Besides the schema's rules, every text must be writable as UTF-8 (JSON's ``"\\ud800"`` escape gives a
lone surrogate, which Python holds but no UTF-8 file or Arrow column can), at most ``MAX_TEXT_CHARS``
characters long, and every number finite and within float32, the type the shards store labels in.
"""

from __future__ import annotations

import math

import numpy as np

from gazerm.data.errors import DataError
from gazerm.data.schema import LABEL_KINDS, PreferenceExample

# The longest prompt, response or context turn gazerm prepares: about 250k tokens, more than any backbone
# reads (data.max_length truncates far below); longer is a broken export, not a text.
MAX_TEXT_CHARS = 1_000_000
# The shards store scores and margins as float32; a larger finite float would become infinity there.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def validate_example(example: PreferenceExample) -> None:
    """Raise :class:`DataError` naming the first field that breaks the schema's rules."""

    def fail(field: str, message: str) -> DataError:
        return DataError(example.source_file, example.source_row, field, message)

    if not isinstance(example.prompt, str) or not example.prompt.strip():
        raise fail("prompt", "prompt is empty")
    for field, value in _texts(example):
        problem = _text_problem(value)
        if problem:
            raise fail(field, problem)
    if not example.responses:
        raise fail("responses", "no responses")
    n = len(example.responses)
    for i, response in enumerate(example.responses):
        if not isinstance(response, str):
            raise fail(f"responses[{i}]", f"expected a string, got {type(response).__name__}")
        if not response.strip():
            raise fail(f"responses[{i}]", "response is empty")
    if example.label_kind not in LABEL_KINDS:
        raise fail("label_kind", f"must be one of {LABEL_KINDS}, got {example.label_kind!r}")
    for k, pair in enumerate(example.pairs):
        for side in ("chosen", "rejected"):
            index = getattr(pair, side)
            if not 0 <= index < n:
                raise fail(f"pairs[{k}].{side}", f"index {index} outside the {n} responses")
        if pair.chosen == pair.rejected or example.responses[pair.chosen] == example.responses[pair.rejected]:
            raise fail(f"pairs[{k}]", "chosen and rejected responses are identical")
        if pair.margin is not None and not _is_number(pair.margin):
            message = f"expected a finite number within float32, got {pair.margin!r:.60}"
            raise fail(f"pairs[{k}].margin", message)
    if example.label_kind == "pairwise" and not example.pairs:
        raise fail("pairs", "pairwise example without a chosen/rejected pair")
    if example.scores is not None:
        _check_numbers(example.scores, n, "scores", fail)
    if example.attribute_scores is not None:
        names = example.attribute_names or []
        if len(example.attribute_scores) != n:
            raise fail("attribute_scores", f"{len(example.attribute_scores)} rows for {n} responses")
        for i, row in enumerate(example.attribute_scores):
            _check_numbers(row, len(names), f"attribute_scores[{i}]", fail)
    for name in ("implicit", "recorded_gaze"):
        values = getattr(example, name)
        if values is not None and len(values) != n:
            raise fail(name, f"{len(values)} values for {n} responses")
    if example.ranking is not None and (
        len(set(example.ranking)) != len(example.ranking) or any(not 0 <= r < n for r in example.ranking)
    ):
        raise fail("ranking", f"not a list of distinct indices into the {n} responses: {example.ranking}")


def _texts(example: PreferenceExample):
    """(field, text) for every string of an example that is written to a shard."""
    yield "prompt", example.prompt
    for i, response in enumerate(example.responses):
        if isinstance(response, str):
            yield f"responses[{i}]", response
    for i, turn in enumerate(example.context or []):
        for key, value in turn.items():
            if isinstance(value, str):
                yield f"context[{i}].{key}", value
    for name in ("source", "domain", "group"):
        value = getattr(example, name)
        if isinstance(value, str):
            yield name, value
    for i, name in enumerate(example.attribute_names or []):
        if isinstance(name, str):
            yield f"attribute_names[{i}]", name


def _text_problem(text: str) -> str | None:
    """Why a text cannot be prepared: too long, or not encodable as UTF-8 (a lone surrogate)."""
    if len(text) > MAX_TEXT_CHARS:
        return f"{len(text):,} characters, more than the {MAX_TEXT_CHARS:,} gazerm prepares"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        return f"not valid Unicode: lone surrogate U+{code:04X} at character {exc.start} (a bad \\u escape?)"
    return None


def _is_number(value: object) -> bool:
    """A finite int or float within float32 (a huge int is not: it does not fit a float at all)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value) and abs(value) <= FLOAT32_MAX
    except OverflowError:
        return False


def _check_numbers(values: list[float], expected: int, field: str, fail) -> None:
    if len(values) != expected:
        raise fail(field, f"{len(values)} values, expected {expected}")
    for i, value in enumerate(values):
        if not _is_number(value):
            raise fail(f"{field}[{i}]", f"expected a finite number within float32, got {value!r:.60}")
