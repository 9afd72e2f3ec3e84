"""The pairs a benchmark reads from a preference file, the same way for every benchmark."""

from __future__ import annotations

from collections.abc import Iterator

from gazerm.data.errors import DataError
from gazerm.data.schema import PreferenceExample
from gazerm.data.sources import iter_source


def pairwise_examples(data_format: str, path: str, invalid: list[DataError]) -> Iterator[PreferenceExample]:
    """The file's examples with at least one pair (ties have none), multi-turn ones with their
    conversation; its invalid rows are collected in ``invalid``."""
    for item in iter_source(data_format, path):
        if isinstance(item, DataError):
            invalid.append(item)
        elif isinstance(item, PreferenceExample) and item.pairs:
            yield item


def report_invalid(invalid: list[DataError]) -> None:
    """Say how many rows were left out, and which was the first: nothing is dropped silently."""
    if invalid:
        print(f"[bench] {len(invalid)} invalid rows left out, the first: {invalid[0]}", flush=True)
