"""Record readers shared by all loaders: local files (JSON, JSONL, CSV, Parquet, .gz) and hub datasets.

Each reader yields ``(row, record_or_error)``: ``row`` is 1-based, and an unreadable record
(bad JSON, non-UTF-8 bytes, a truncated line) comes back as a :class:`DataError` in place of
the record, so the caller decides to stop or to quarantine it. Readers never skip a record.
A file that cannot be parsed at all (a truncated JSON array, non-UTF-8 bytes in a JSON or CSV
file, a corrupt Parquet footer) raises :class:`UnreadableFileError` instead: no record of it can
be trusted, and ``prepare`` with ``on_error=quarantine`` records it and goes on.

Hostile or broken input never escapes as a Python error: a JSON value nested deeper than the parser
recurses (``RecursionError``) or an integer longer than Python converts (``ValueError``) is a bad record
(a bad file for a JSON array), a Parquet data page that does not decode makes the file unreadable, and
a CSV field is read whatever its length (the file is in memory already; ``validate`` caps text fields
at ``MAX_TEXT_CHARS`` for every format).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import reprlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from gazerm.data.errors import DataError

Record = dict[str, Any]
RecordOrError = tuple[int, Record | DataError]

# Python's csv module refuses fields over 131,072 characters by default; a CSV file is read whole into
# memory before it is parsed, so that limit protects nothing and would reject a long text. This is the
# largest limit a C long takes on every platform; text length is capped per field by validation.
CSV_FIELD_LIMIT = 2**31 - 1

# What a JSON parser may raise on hostile input besides JSONDecodeError: RecursionError (nesting deeper
# than the interpreter recurses) and ValueError (an integer of more than sys.get_int_max_str_digits()).
_JSON_ERRORS = (ValueError, RecursionError)


class UnreadableFileError(DataError):
    """A whole input file whose content cannot be parsed, as opposed to a missing file or a bad option."""


@dataclass(frozen=True)
class Layout:
    """How a format's files deviate from the readers' defaults (a CSV header row, a JSON array).

    ``columns`` names the columns of a headerless CSV (a first row equal to them is read as a header);
    ``keyed_by`` reads a JSON object of objects as records, each object's key under that field.
    """

    columns: tuple[str, ...] | None = None
    keyed_by: str | None = None


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _format(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    return suffixes[-1].lstrip(".") if suffixes else ""


def read_records(path: str | Path, layout: Layout = Layout()) -> Iterator[RecordOrError]:
    """Records of a local file, by extension (``.json``, ``.jsonl``, ``.csv``, ``.parquet``), read as
    ``layout`` says."""
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), None, None, "file not found")
    fmt = _format(path)
    readers = {
        "jsonl": _read_jsonl,
        "json": lambda path: _read_json(path, layout.keyed_by),
        "csv": lambda path: _read_csv(path, layout.columns),
        "parquet": _read_parquet,
    }
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
    except _JSON_ERRORS as exc:
        return DataError(file, row, None, f"JSON gazerm does not read ({_json_problem(exc)})")
    if not isinstance(record, dict):
        return DataError(file, row, None, f"expected a JSON object, got {type(record).__name__}")
    return record


def _read_json(path: Path, keyed_by: str | None) -> Iterator[RecordOrError]:
    """A JSON array of objects (or ``{"data": [...]}``, or with ``keyed_by`` an object of objects); a
    file that does not parse is one error."""
    name = str(path)
    document = _parse_json(path)
    if keyed_by is not None:
        yield from _keyed_records(document, name, keyed_by)
        return
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        document = document["data"]
    if not isinstance(document, list):
        raise UnreadableFileError(name, None, None, "expected a JSON array of records")
    for row, record in enumerate(document, start=1):
        if isinstance(record, dict):
            yield row, record
        else:
            yield row, DataError(name, row, None, f"expected a JSON object, got {type(record).__name__}")


def _keyed_records(document: Any, file: str, keyed_by: str) -> Iterator[RecordOrError]:
    """``{key: {...}}`` as records ``{keyed_by: key, ...}``; row is the key's position in the object."""
    if not isinstance(document, dict):
        raise UnreadableFileError(file, None, None, f"expected a JSON object of records keyed by {keyed_by}")
    for row, (key, value) in enumerate(document.items(), start=1):
        if isinstance(value, dict):
            yield row, {**value, keyed_by: key}
        else:
            yield row, DataError(file, row, None, f"expected a JSON object, got {type(value).__name__}")


def _parse_json(path: Path) -> Any:
    """The whole document; a file that is not UTF-8 JSON raises :class:`UnreadableFileError`."""
    name = str(path)
    raw = _read_whole(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableFileError(name, None, None, f"not valid UTF-8 at byte {exc.start}") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UnreadableFileError(
            name,
            None,
            None,
            f"invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}); truncated file?",
        ) from exc
    except _JSON_ERRORS as exc:
        message = f"JSON gazerm does not read ({_json_problem(exc)})"
        raise UnreadableFileError(name, None, None, message) from None
    return document


def _json_problem(exc: Exception) -> str:
    """What is wrong with JSON that parses as JSON but not in Python: too deep, or too long a number."""
    if isinstance(exc, RecursionError):
        return "arrays or objects nested too deeply"
    return str(exc).split(";")[0]  # "Exceeds the limit (4300 digits) for integer string conversion: ..."


def _read_whole(path: Path) -> bytes:
    """All bytes of a file that is parsed in one piece (JSON array, CSV); a broken gzip stream fails it."""
    try:
        with _open_bytes(path) as handle:
            return handle.read()
    except (EOFError, OSError, zlib.error) as exc:
        raise UnreadableFileError(str(path), None, None, f"file is truncated or corrupt ({exc})") from exc


def _read_csv(path: Path, columns: tuple[str, ...] | None) -> Iterator[RecordOrError]:
    """Rows as records keyed by the header, or by ``columns`` for a headerless file (rows count from
    line 1 either way, so a header is line 1)."""
    name = str(path)
    raw = _read_whole(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UnreadableFileError(name, line, None, f"not valid UTF-8 at byte {exc.start}") from exc
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))  # process-wide; see CSV_FIELD_LIMIT
    reader = csv.DictReader(io.StringIO(text, newline=""), fieldnames=columns)
    try:
        header_width = len(reader.fieldnames or [])
    except csv.Error as exc:
        raise UnreadableFileError(name, 1, None, f"not readable as CSV ({exc})") from None
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # the parser's state past a malformed row is unknown: stop at it
            message = f"not readable as CSV from this row on ({exc})"
            raise UnreadableFileError(name, reader.line_num, None, message) from None
        row = reader.line_num
        if row == 1 and columns is not None and list(record.values()) == list(columns):
            continue  # a header naming exactly the declared columns is not a record
        if None in record or len(record) != header_width or any(v is None for v in record.values()):
            yield row, DataError(name, row, None, f"expected {header_width} columns; truncated or ragged row")
        else:
            yield row, record


def _read_parquet(path: Path) -> Iterator[RecordOrError]:
    name = str(path)
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for corrupt/truncated footers
        raise UnreadableFileError(name, None, None, f"not a readable Parquet file ({exc})") from exc
    row = 0
    batches = parquet.iter_batches()
    while True:
        try:
            batch = next(batches, None)
            records = [] if batch is None else batch.to_pylist()
        except Exception as exc:  # a corrupt data page: pyarrow raises OSError, ArrowInvalid and others
            message = f"a data page after row {row} does not decode ({type(exc).__name__}: {exc})"
            raise UnreadableFileError(name, None, None, message) from exc
        if batch is None:
            return
        for record in records:
            row += 1
            yield row, record


def read_hub_records(
    name: str, split: str, data_files: str | list[str] | None = None, **kwargs: Any
) -> Iterator[RecordOrError]:
    """Records of a hub dataset via ``datasets.load_dataset`` (a hub name or a builder, e.g. "json").

    Any failure to load (no such dataset or split, no network, a corrupt data file) is a
    :class:`DataError` naming the dataset and split, not a traceback from deep inside ``datasets``.
    """
    import datasets

    try:
        dataset = datasets.load_dataset(name, split=split, data_files=data_files, **kwargs)
    except Exception as exc:  # datasets raises many unrelated types (hub, network, builder errors)
        message = f"cannot load the dataset ({type(exc).__name__}: {exc})"
        raise DataError(hub_label(name, split, data_files), None, None, message) from exc
    yield from enumerate(dataset, start=1)


def download_hub_file(name: str, filename: str) -> Path:
    """One file of a hub dataset repository, for releases whose files ``datasets`` cannot read as
    they are (a headerless CSV, a JSON object of records); a failure is a :class:`DataError`."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(name, filename, repo_type="dataset"))
    except Exception as exc:  # hub, network and missing-file errors have no common base
        message = f"cannot download the file ({type(exc).__name__}: {exc})"
        raise DataError(f"{name}/{filename}", None, None, message) from exc


def hub_label(name: str, split: str, data_files: str | list[str] | None) -> str:
    """How errors name a hub split: ``name[split]``, plus the files when a local builder reads them."""
    files = [data_files] if isinstance(data_files, str) else data_files or []
    return f"{name}[{split}]" + (f" ({', '.join(map(str, files))})" if files else "")


def require(record: Record, field: str, kind: type | tuple[type, ...], file: str, row: int) -> Any:
    """``record[field]`` checked against ``kind``; a missing field or wrong type is a :class:`DataError`."""
    if field not in record or record[field] is None:
        raise DataError(file, row, field, "missing")
    value = record[field]
    if not isinstance(value, kind) or (kind in (int, float, (int, float)) and isinstance(value, bool)):
        expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        message = f"expected {expected}, got {type(value).__name__}: {preview(value)}"
        raise DataError(file, row, field, message)
    return value


_PREVIEW = reprlib.Repr()
_PREVIEW.maxlevel, _PREVIEW.maxstring, _PREVIEW.maxother = 3, 60, 60


def preview(value: Any) -> str:
    """A short repr of a bad value for an error message: bounded in length and depth, whatever the value
    (a list nested thousands deep, a string of megabytes); a lone surrogate shows escaped."""
    return _PREVIEW.repr(value)[:60]
