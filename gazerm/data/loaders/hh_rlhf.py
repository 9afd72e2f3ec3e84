"""Anthropic HH-RLHF: ``chosen``/``rejected`` transcripts of one conversation → one pairwise example."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from gazerm.data.loaders.base import Loaded, SourceFormat, guarded, register
from gazerm.data.loaders.common import text
from gazerm.data.loaders.transcripts import parse_candidates
from gazerm.data.readers import Record, RecordOrError
from gazerm.data.schema import Pair, PreferenceExample

NAME = "hh_rlhf"


def parse(records: Iterable[RecordOrError], file: str) -> Iterator[Loaded]:
    def build(record: Record, row: int) -> Iterator[PreferenceExample]:
        candidates = [(field, text(record, field, file, row)) for field in ("chosen", "rejected")]
        shared, replies = parse_candidates(candidates, file, row)
        yield PreferenceExample(
            source=NAME,
            source_file=file,
            source_row=row,
            prompt=shared.prompt,
            context=shared.context,
            responses=replies,
            label_kind="pairwise",
            pairs=[Pair(0, 1)],
        )

    return guarded(records, file, build)


register(
    SourceFormat(
        name=NAME,
        hub_name="Anthropic/hh-rlhf",
        parse=parse,
        description="JSONL(.gz) 'chosen'/'rejected' Human/Assistant transcripts differing in the last reply",
    )
)
