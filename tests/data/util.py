"""Fixture writers and assertions shared by the loader tests; every fixture is written into ``tmp_path``."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gazerm.data.errors import DataError
from gazerm.data.loaders.base import Loaded
from gazerm.data.schema import PreferenceExample
from gazerm.data.sources import iter_source


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def write_json(path: Path, records: list[Any]) -> Path:
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    return write_headerless_csv(path, [header, *rows])


def write_headerless_csv(path: Path, rows: Sequence[Sequence[Any]]) -> Path:
    """Rows as Python's ``csv.writer`` writes them (minimal quoting, CRLF row ends), with no header."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def load(format: str, path: Path, **options: Any) -> list[Loaded]:
    return list(iter_source(format, path, **options))


def examples(items: list[Loaded]) -> list[PreferenceExample]:
    """The items, which must all be examples: neither an error nor a tie."""
    others = [item for item in items if not isinstance(item, PreferenceExample)]
    assert not others, others
    return items  # type: ignore[return-value]


def only_error(items: list[Loaded]) -> DataError:
    errors = [item for item in items if isinstance(item, DataError)]
    assert len(errors) == 1, items
    return errors[0]


def assert_names(error: DataError, file: Path | str, row: int | None, field: str | None) -> None:
    """The error, and its message, point at the exact file, row and field."""
    assert (error.file, error.row, error.field) == (str(file), row, field), error
    message = str(error)
    assert message.startswith(str(file)), message
    if row is not None:
        assert f"row {row}" in message, message
    if field is not None:
        assert f"field '{field}'" in message, message


def pairs(example: PreferenceExample) -> list[tuple[int, int, float | None]]:
    return [(p.chosen, p.rejected, p.margin) for p in example.pairs]


def study_rows(sizes: dict[str, int]) -> list[dict[str, Any]]:
    """Workers labelling prompts of one shared pool: the same prompt is labelled by several groups."""
    return [
        {"prompt": f"P{k}", "chosen": f"{worker} likes {k}", "rejected": f"{worker} not {k}", "group": worker}
        for worker, count in sizes.items()
        for k in range(count)
    ]
