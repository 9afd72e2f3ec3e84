"""Checks every loaded example must pass before it reaches a shard."""

from __future__ import annotations

import math

from gazerm.data.errors import DataError
from gazerm.data.schema import LABEL_KINDS, PreferenceExample


def validate_example(example: PreferenceExample) -> None:
    """Raise :class:`DataError` naming the first field that breaks the schema's rules."""

    def fail(field: str, message: str) -> DataError:
        return DataError(example.source_file, example.source_row, field, message)

    if not isinstance(example.prompt, str) or not example.prompt.strip():
        raise fail("prompt", "prompt is empty")
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


def _check_numbers(values: list[float], expected: int, field: str, fail) -> None:
    if len(values) != expected:
        raise fail(field, f"{len(values)} values, expected {expected}")
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise fail(f"{field}[{i}]", f"expected a finite number, got {value!r}")
