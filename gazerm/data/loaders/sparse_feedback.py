"""CSV files in the style of the sparse-feedback study that compares ratings with rankings.

* ``sparse_ratings`` — ``prompt,response,rating`` (any numeric scale, e.g. 1-7): the rows of one
  prompt become a "rating" example, pairs from the ratings (higher is chosen, margin = difference,
  equal ratings give no pair). A response rated more than once (several annotators) appears once,
  with the mean of its ratings, so the example never holds the same text twice.
* ``sparse_rankings`` — ``prompt,response_a,response_b,preference`` with preference "A", "B" or
  "equal": a "pairwise" example with responses ``[a, b]`` in file order. A tie states no preference
  and the schema has no pairwise label for one, so an "equal" row is reported as a (quarantinable)
  error "tie: no preference" instead of being dropped unseen.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from statistics import fmean

from gazerm.data.errors import DataError
from gazerm.data.loaders.base import Loaded, SourceFormat, guarded, register
from gazerm.data.loaders.common import group_by_prompt, number, rating_example, text
from gazerm.data.readers import Record, RecordOrError
from gazerm.data.schema import Pair, PreferenceExample

CHOICES = {"a": (0, 1), "b": (1, 0)}  # preference → (chosen, rejected) index


def parse_ratings(records: Iterable[RecordOrError], file: str) -> Iterator[Loaded]:
    def read_row(record: Record, row: int) -> tuple[str, tuple[str, float]]:
        prompt = text(record, "prompt", file, row)
        return prompt, (text(record, "response", file, row), number(record, "rating", file, row))

    for group in group_by_prompt(records, read_row):
        if isinstance(group, DataError):
            yield group
            continue
        row, prompt, items = group
        ratings: dict[str, list[float]] = {}
        for response, rating in items:
            ratings.setdefault(response, []).append(rating)
        scores = [fmean(values) for values in ratings.values()]
        yield rating_example("sparse_ratings", file, row, prompt, list(ratings), scores)


def parse_rankings(records: Iterable[RecordOrError], file: str) -> Iterator[Loaded]:
    def build(record: Record, row: int) -> Iterator[PreferenceExample]:
        preference = text(record, "preference", file, row).strip().lower()
        if preference == "equal":
            raise DataError(file, row, "preference", "tie: no preference")
        if preference not in CHOICES:
            raise DataError(
                file, row, "preference", f"expected A, B or equal, got {record['preference']!r:.60}"
            )
        yield PreferenceExample(
            source="sparse_rankings",
            source_file=file,
            source_row=row,
            prompt=text(record, "prompt", file, row),
            responses=[text(record, "response_a", file, row), text(record, "response_b", file, row)],
            label_kind="pairwise",
            pairs=[Pair(*CHOICES[preference])],
        )

    return guarded(records, file, build)


register(
    SourceFormat(
        name="sparse_ratings",
        hub_name=None,
        parse=parse_ratings,
        description="CSV prompt,response,rating; the rows of a prompt form one rating example",
    )
)
register(
    SourceFormat(
        name="sparse_rankings",
        hub_name=None,
        parse=parse_rankings,
        description="CSV prompt,response_a,response_b,preference (A/B/equal) → pairwise examples",
    )
)
