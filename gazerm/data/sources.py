"""``iter_source``: one registered format, read from a local file or the hub, as validated examples."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from gazerm.data.errors import DataError
from gazerm.data.loaders import (  # noqa: F401 - importing registers the formats
    dsp,
    generic,
    helpsteer2,
    hh_rlhf,
    ifllm,
    oasst1,
    sparse_feedback,
    text_score,
)
from gazerm.data.loaders.base import FORMATS, Loaded, SourceFormat
from gazerm.data.readers import (
    RecordOrError,
    download_hub_file,
    hub_label,
    read_hub_records,
    read_records,
)
from gazerm.data.schema import PreferenceExample
from gazerm.data.validate import validate_example


def iter_source(
    format: str,
    path: str | Path | None = None,
    *,
    hub_name: str | None = None,
    split: str = "train",
    data_files: str | list[str] | None = None,
    limit: int | None = None,
    **options: Any,
) -> Iterator[Loaded]:
    """Examples of one source, each validated, a ``Tie`` (``loaders.base``) for every row that states
    no preference, a :class:`DataError` for every bad row, and the parser's ``SourceReport`` if any.

    Without ``path`` the records come from ``hub_name`` (default: the format's real hub dataset, or
    its ``hub_files`` file for ``split``, downloaded), or from a local builder such as "json" with
    ``data_files``. An example that fails validation is yielded as its error, never skipped.
    ``limit`` counts examples, not ties or errors. ``options`` go to the format's parser; an option it
    does not take, or a value not of the type its signature declares, is an error before anything is
    read.
    """
    fmt = _format(format, str(path or hub_name or format))
    if path is None and hub_name in (None, fmt.hub_name) and fmt.hub_files is not None:
        path = download_hub_file(fmt.hub_name, _hub_file(fmt, split))
    if path is not None:
        records = fmt.read(Path(path)) if fmt.read else read_records(path, fmt.layout)
        file = str(path)
    else:
        file, records = _hub_records(fmt, hub_name, split, data_files)
    _check_options(fmt, file, options)
    if limit is not None and fmt.whole_source:
        raise DataError(
            file, None, "limit", f"format {format} reads its source whole (its report counts all of it)"
        )
    count = 0
    for item in fmt.parse(records, file, **options):
        if isinstance(item, PreferenceExample):
            try:
                validate_example(item)
            except DataError as error:
                item = error
            else:
                count += 1
        yield item
        if limit is not None and count >= limit:
            return


def _hub_file(fmt: SourceFormat, split: str) -> str:
    files = fmt.hub_files or {}
    if split not in files:
        message = f"{fmt.hub_name} has no {split!r} file for format {fmt.name!r}; splits: {sorted(files)}"
        raise DataError(fmt.name, None, "split", message)
    return files[split]


def _hub_records(
    fmt: SourceFormat, hub_name: str | None, split: str, data_files: str | list[str] | None
) -> tuple[str, Iterator[RecordOrError]]:
    name = hub_name or fmt.hub_name
    if name is None:
        raise DataError(
            fmt.name,
            None,
            "path",
            "no hub dataset for this format: give a path, or hub_name='json' and data_files",
        )
    return hub_label(name, split, data_files), read_hub_records(name, split, data_files)


def check_options(format: str, options: dict[str, Any], file: str | None = None) -> None:
    """Raise :class:`DataError` unless ``format`` is registered and its parser takes ``options``, each
    of the type its signature declares (e.g. a ``pairing`` one of its ``Literal`` values)."""
    file = file or format
    _check_options(_format(format, file), file, options)


def _format(format: str, file: str) -> SourceFormat:
    fmt = FORMATS.get(format)
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        raise DataError(file, None, "format", f"unknown format {format!r}; known: {known}")
    return fmt


def _check_options(fmt: SourceFormat, file: str, options: dict[str, Any]) -> None:
    try:
        inspect.signature(fmt.parse).bind(None, file, **options)
    except TypeError as exc:
        raise DataError(file, None, "options", f"format {fmt.name!r}: {exc}") from None
    hints = typing.get_type_hints(fmt.parse)
    for name, value in options.items():
        if name not in hints:
            continue
        try:
            TypeAdapter(hints[name]).validate_python(value, strict=True)
        except ValidationError as exc:
            message = f"format {fmt.name!r}: {value!r}: {exc.errors()[0]['msg']}"
            raise DataError(file, None, f"options.{name}", message) from None
