"""NVIDIA HelpSteer2: one row per (prompt, response) with five 0-4 attribute ratings.

All rows of a prompt (consecutive or not) become one "rating" example: ``scores`` is the
helpfulness of each response, ``attribute_names``/``attribute_scores`` keep all five
attributes. Pairs follow helpfulness, the attribute HelpSteer2 recommends for preference
training: the more helpful response is chosen, the margin is the helpfulness difference,
and equal helpfulness gives no pair. A prompt with a single response still gives a rating
example, without pairs. The example's row is its prompt's first input row; errors name the
input row they come from, and a bad row is reported and left out of its prompt's example.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from gazerm.data.errors import DataError
from gazerm.data.loaders.base import Loaded, SourceFormat, register
from gazerm.data.loaders.common import group_by_prompt, number, rating_example, text
from gazerm.data.readers import Record, RecordOrError

NAME = "helpsteer2"
ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
HELPFULNESS = ATTRIBUTES.index("helpfulness")
MAX_RATING = 4


def _rating(record: Record, field: str, file: str, row: int) -> float:
    value = number(record, field, file, row)
    if value != int(value) or not 0 <= value <= MAX_RATING:
        raise DataError(file, row, field, f"expected an integer 0-{MAX_RATING}, got {record[field]!r}")
    return value


def parse(records: Iterable[RecordOrError], file: str) -> Iterator[Loaded]:
    def read_row(record: Record, row: int) -> tuple[str, tuple[str, list[float]]]:
        ratings = [_rating(record, attribute, file, row) for attribute in ATTRIBUTES]
        return text(record, "prompt", file, row), (text(record, "response", file, row), ratings)

    for group in group_by_prompt(records, read_row):
        if isinstance(group, DataError):
            yield group
            continue
        row, prompt, items = group
        yield rating_example(
            NAME,
            file,
            row,
            prompt,
            responses=[response for response, _ in items],
            scores=[ratings[HELPFULNESS] for _, ratings in items],
            attribute_names=list(ATTRIBUTES),
            attribute_scores=[ratings for _, ratings in items],
        )


register(
    SourceFormat(
        name=NAME,
        hub_name="nvidia/HelpSteer2",
        parse=parse,
        description="prompt/response rows with 0-4 ratings of five attributes (helpfulness first)",
    )
)
