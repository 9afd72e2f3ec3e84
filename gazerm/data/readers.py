"""Record readers shared by all loaders: local files (JSON, JSONL, CSV, Parquet, .gz) and hub datasets.

Each reader yields ``(row, record_or_error)``: ``row`` is 1-based, and an unreadable record
(bad JSON, non-UTF-8 bytes, a truncated line) comes back as a :class:`DataError` in place of
the record, so the caller decides to stop or to quarantine it. Readers never skip a record.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from gazerm.data.errors import DataError

Record = dict[str, Any]
RecordOrError = tuple[int, Record | DataError]


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _format(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    return suffixes[-1].lstrip(".") if suffixes else ""


def read_records(path: str | Path) -> Iterator[RecordOrError]:
    """Records of a local file, by extension (``.json``, ``.jsonl``, ``.csv``, ``.parquet``)."""
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), None, None, "file not found")
    fmt = _format(path)
    readers = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet}
    if fmt not in readers:
        raise DataError(
            str(path), None, None, f"unknown file type '.{fmt}' (expected one of {sorted(readers)})"
        )
    yield from readers[fmt](path)


def _read_jsonl(path: Path) -> Iterator[RecordOrError]:
    name = str(path)
    row = 0
    try:
        with _open_bytes(path) as handle:
            for row, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                yield row, _decode_json_line(raw, name, row)
    except (EOFError, OSError, zlib.error) as exc:  # truncated or corrupt gzip stream
        yield row + 1, DataError(name, row + 1, None, f"file is truncated or corrupt ({exc})")


def _decode_json_line(raw: bytes, file: str, row: int) -> Record | DataError:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return DataError(file, row, None, f"not valid UTF-8 at byte {exc.start}")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return DataError(file, row, None, f"invalid JSON ({exc.msg} at column {exc.colno}); truncated line?")
    if not isinstance(record, dict):
        return DataError(file, row, None, f"expected a JSON object, got {type(record).__name__}")
    return record


def _read_json(path: Path) -> Iterator[RecordOrError]:
    """A JSON array of objects (or ``{"data": [...]}``); a file that does not parse is one error."""
    name = str(path)
    with _open_bytes(path) as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(name, None, None, f"not valid UTF-8 at byte {exc.start}") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            name,
            None,
            None,
            f"invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}); truncated file?",
        ) from exc
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        document = document["data"]
    if not isinstance(document, list):
        raise DataError(name, None, None, "expected a JSON array of records")
    for row, record in enumerate(document, start=1):
        if isinstance(record, dict):
            yield row, record
        else:
            yield row, DataError(name, row, None, f"expected a JSON object, got {type(record).__name__}")


def _read_csv(path: Path) -> Iterator[RecordOrError]:
    name = str(path)
    with _open_bytes(path) as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(name, line, None, f"not valid UTF-8 at byte {exc.start}") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header_width = len(reader.fieldnames or [])
    for record in reader:
        row = reader.line_num
        if None in record or len(record) != header_width or any(v is None for v in record.values()):
            yield row, DataError(name, row, None, f"expected {header_width} columns; truncated or ragged row")
        else:
            yield row, record


def _read_parquet(path: Path) -> Iterator[RecordOrError]:
    name = str(path)
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for corrupt/truncated footers
        raise DataError(name, None, None, f"not a readable Parquet file ({exc})") from exc
    row = 0
    for batch in parquet.iter_batches():
        for record in batch.to_pylist():
            row += 1
            yield row, record


def read_hub_records(
    name: str, split: str, data_files: str | list[str] | None = None, **kwargs: Any
) -> Iterator[RecordOrError]:
    """Records of a hub dataset via ``datasets.load_dataset`` (a hub name or a builder, e.g. "json")."""
    import datasets

    dataset = datasets.load_dataset(name, split=split, data_files=data_files, **kwargs)
    yield from enumerate(dataset, start=1)


def require(record: Record, field: str, kind: type | tuple[type, ...], file: str, row: int) -> Any:
    """``record[field]`` checked against ``kind``; a missing field or wrong type is a :class:`DataError`."""
    if field not in record or record[field] is None:
        raise DataError(file, row, field, "missing")
    value = record[field]
    if not isinstance(value, kind) or (kind in (int, float, (int, float)) and isinstance(value, bool)):
        expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise DataError(file, row, field, f"expected {expected}, got {type(value).__name__}: {value!r:.60}")
    return value
