"""Text-score lists: a prompt with any number of responses, each with a score (higher is better).

The format customized reward models are trained from (DSP's domains converted to lists of
``{"text", "score"}``): one JSONL/JSON/Parquet record per prompt,
``{"prompt", "responses": [{"text", "score"}, ...], "source"?, "domain"?}``.
A record becomes a "rating" example: ``scores`` in response order (a listwise loss ranks them,
ties sharing a rank) and the pairs they imply (higher is chosen, margin = gap, ties give none).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from gazerm.data.errors import DataError
from gazerm.data.loaders.base import Loaded, SourceFormat, guarded, register
from gazerm.data.loaders.common import nested, number, optional, rating_example, text
from gazerm.data.readers import Record, RecordOrError
from gazerm.data.schema import PreferenceExample

NAME = "text_score"


def parse(records: Iterable[RecordOrError], file: str) -> Iterator[Loaded]:
    def build(record: Record, row: int) -> Iterator[PreferenceExample]:
        items = nested(record, "responses", list, file, row)
        if len(items) < 2:
            raise DataError(file, row, "responses", f"a list needs at least 2 responses, got {len(items)}")
        responses, scores = [], []
        for name in items:
            item = nested(items, name, dict, file, row)
            responses.append(text(item, f"{name}.text", file, row))
            scores.append(number(item, f"{name}.score", file, row))
        yield rating_example(
            optional(text, record, "source", file, row) or NAME,
            file,
            row,
            text(record, "prompt", file, row),
            responses,
            scores,
            domain=optional(text, record, "domain", file, row),
        )

    return guarded(records, file, build)


register(
    SourceFormat(
        name=NAME,
        hub_name=None,
        parse=parse,
        description="prompt + responses [{text, score}, ...] lists (any length >= 2): JSONL, JSON, Parquet",
    )
)
