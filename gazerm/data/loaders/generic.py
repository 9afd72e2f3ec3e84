"""The generic pairwise format: records with ``prompt``, ``chosen``, ``rejected`` and optional
``margin``, ``source``, ``domain``, ``group`` (who gave the label, for grouped splits) and ``context``
(the conversation before the prompt: ``[{"role": "user", "content": …}, {"role": "assistant", …}]``),
in JSONL, JSON or Parquet. It is the format to convert any other pairwise data set into, and the one the
synthetic quickstart set is written in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from gazerm.data.loaders.base import Loaded, SourceFormat, guarded, register
from gazerm.data.loaders.common import context_turns, number, optional, text
from gazerm.data.readers import Record, RecordOrError
from gazerm.data.schema import Pair, PreferenceExample

NAME = "generic"


def parse(records: Iterable[RecordOrError], file: str) -> Iterator[Loaded]:
    def build(record: Record, row: int) -> Iterator[PreferenceExample]:
        yield PreferenceExample(
            source=optional(text, record, "source", file, row) or NAME,
            source_file=file,
            source_row=row,
            prompt=text(record, "prompt", file, row),
            context=context_turns(record, file, row),
            responses=[text(record, "chosen", file, row), text(record, "rejected", file, row)],
            label_kind="pairwise",
            pairs=[Pair(0, 1, optional(number, record, "margin", file, row))],
            domain=optional(text, record, "domain", file, row),
            group=optional(text, record, "group", file, row),
        )

    return guarded(records, file, build)


register(
    SourceFormat(
        name=NAME,
        hub_name=None,
        parse=parse,
        description="prompt/chosen/rejected records (optional margin, source, domain, group, context): "
        "JSONL, JSON, Parquet",
    )
)
