"""Field checks and row grouping shared by the loaders, so every format reports bad input the same way."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from gazerm.data.errors import DataError
from gazerm.data.readers import Record, RecordOrError, preview, require
from gazerm.data.schema import Pair, PreferenceExample, pairs_from_scores

T = TypeVar("T")


def text(record: Record, field: str, file: str, row: int) -> str:
    """A required, non-blank string: an empty prompt or response is bad input, not a usable example."""
    value = require(record, field, str, file, row)
    if not value.strip():
        raise DataError(file, row, field, "empty")
    return value


def number(record: Record, field: str, file: str, row: int) -> float:
    """A required finite number; numeric strings are accepted because CSV cells are always strings.
    An integer too large for a float (``OverflowError``) or a string that overflows to infinity is not
    finite."""
    value = require(record, field, (int, float, str), file, row)
    if isinstance(value, bool):
        raise DataError(file, row, field, f"expected a number, got {value!r}")
    try:
        result = float(value)
    except ValueError:
        raise DataError(file, row, field, f"expected a number, got {preview(value)}") from None
    except OverflowError:
        result = math.inf
    if not math.isfinite(result):
        raise DataError(file, row, field, f"expected a finite number, got {preview(value)}")
    return result


def nested(record: Record, field: str, kind: type[list] | type[dict], file: str, row: int) -> Record:
    """A list or object field as ``{"field[i]": item}`` / ``{"field.key": item}``, so errors name the item."""
    value = require(record, field, kind, file, row)
    if isinstance(value, list):
        return {f"{field}[{i}]": item for i, item in enumerate(value)}
    return {f"{field}.{key}": item for key, item in value.items()}


def optional(
    read: Callable[[Record, str, str, int], T], record: Record, field: str, file: str, row: int
) -> T | None:
    """``read(record, field, ...)`` when the field is present and not null, else None."""
    return None if record.get(field) is None else read(record, field, file, row)


def context_turns(record: Record, file: str, row: int) -> list[dict[str, str]]:
    """The optional ``context``: the conversation before the prompt, a list of ``{role, content}``
    objects (``[]`` when absent); errors name the turn and key (``context[2].content``)."""
    if record.get("context") is None:
        return []
    turns = nested(record, "context", list, file, row)
    read = []
    for name in turns:
        turn = nested(turns, name, dict, file, row)
        read.append({key: text(turn, f"{name}.{key}", file, row) for key in ("role", "content")})
    return read


def group_by_prompt(
    records: Iterable[RecordOrError], read_row: Callable[[Record, int], tuple[str, T]]
) -> Iterator[tuple[int, str, list[T]] | DataError]:
    """``(first_row, prompt, items)`` for the rows of each prompt, in first-seen order.

    Sources that give one response per row (ratings) only become comparable once all rows of a
    prompt are together, and they need not be consecutive, so the whole input is grouped before
    any example is built. A bad row is yielded as its error at once and left out of its group.
    """
    groups: dict[str, tuple[int, list[T]]] = {}
    for row, record in records:
        if isinstance(record, DataError):
            yield record
            continue
        try:
            prompt, item = read_row(record, row)
        except DataError as error:
            yield error
            continue
        groups.setdefault(prompt, (row, []))[1].append(item)
    for prompt, (row, items) in groups.items():
        yield row, prompt, items


def rating_example(
    source: str, file: str, row: int, prompt: str, responses: list[str], scores: list[float], **labels
) -> PreferenceExample:
    """A "rating" example with pairs from the scores: higher is chosen, margin = gap, ties give none."""
    pairs = pairs_from_scores(scores)
    return labelled_example(source, file, row, prompt, responses, "rating", pairs, scores=scores, **labels)


def labelled_example(
    source: str,
    file: str,
    row: int,
    prompt: str,
    responses: list[str],
    kind: str,
    pairs: list[Pair],
    **labels,
) -> PreferenceExample:
    """An example of one prompt, traced to its file and row, with its label kind and pairs."""
    return PreferenceExample(
        source=source,
        source_file=file,
        source_row=row,
        prompt=prompt,
        responses=responses,
        label_kind=kind,
        pairs=pairs,
        **labels,
    )
