"""Session logs (IFLLM-style implicit feedback; the format is in :mod:`gazerm.features.implicit`) →
validated :class:`~gazerm.features.implicit.SessionView` records, each error naming the file, row
and field (``mouse[3].t``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from gazerm.data.errors import DataError
from gazerm.data.loaders.common import context_turns, nested, number, optional, text
from gazerm.data.readers import Record, read_records, require
from gazerm.features.implicit import DEFAULT_PAGE_HEIGHT_PX, ResponseKey, SessionView

T = TypeVar("T")


def read_session_log(path: str | Path) -> Iterator[SessionView]:
    """The validated records of one session log; the first bad one raises a :class:`DataError`."""
    for row, record in tqdm(read_records(path), desc=f"sessions {path}", unit=" records", mininterval=2.0):
        if isinstance(record, DataError):
            raise record
        yield parse_view(record, str(path), row)


def parse_view(record: Record, file: str, row: int) -> SessionView:
    """One log record → a :class:`SessionView`; errors name the file, row and field (``mouse[3].t``)."""
    session_id = text(record, "session_id", file, row)
    key = ResponseKey(
        text(record, "prompt", file, row), _context(record, file, row), text(record, "response", file, row)
    )
    view = nested(record, "view", dict, file, row)
    start, end = number(view, "view.start_ms", file, row), number(view, "view.end_ms", file, row)
    if end <= start:
        raise DataError(
            file, row, "view.end_ms", f"the view ends at {end:g} ms, not after its start {start:g}"
        )
    page_height = optional(number, record, "page_height", file, row)
    if page_height is None:
        page_height = DEFAULT_PAGE_HEIGHT_PX
    elif page_height <= 0:
        raise DataError(file, row, "page_height", f"must be positive, got {page_height:g}")
    if record.get("gaze") is not None and record.get("fixations") is not None:
        raise DataError(file, row, "fixations", "give raw 'gaze' samples or detected 'fixations', not both")
    samples = {
        field: _samples(record, field, columns, file, row)
        for field, columns in (("scroll", "ty"), ("mouse", "txy"), ("gaze", "txy"))
    }
    for field, values in samples.items():
        _check_times(values[:, 0], field, "t", (start, end), file, row)
    fixations = _samples(record, "fixations", ("onset", "duration", "x", "y"), file, row)
    _check_times(fixations[:, 0], "fixations", "onset", (start, end), file, row)
    short = np.flatnonzero(fixations[:, 1] <= 0)
    if short.size:
        raise DataError(file, row, f"fixations[{short[0]}].duration", "must be positive")
    return SessionView(
        file=file,
        row=row,
        session_id=session_id,
        key=key,
        start_ms=start,
        end_ms=end,
        page_height=page_height,
        scroll=samples["scroll"],
        mouse=samples["mouse"],
        gaze=samples["gaze"],
        fixations=fixations[:, :2],
    )


def _context(record: Record, file: str, row: int) -> tuple[tuple[str, str], ...]:
    return tuple((turn["role"], turn["content"]) for turn in context_turns(record, file, row))


def _samples(record: Record, field: str, columns: Sequence[str], file: str, row: int) -> np.ndarray:
    """``(n, len(columns))`` float64 of a list-of-objects field (``(0, k)`` when absent).

    Well-formed lists are converted in one Arrow pass; only a list that fails it (a missing or
    non-numeric value, or numeric strings) is walked item by item to name the bad item or accept it.
    """
    if record.get(field) is None:
        return np.empty((0, len(columns)))
    values = require(record, field, list, file, row)
    matrix = _numeric_matrix(values, columns)
    if matrix is not None:
        return matrix
    items = nested(record, field, list, file, row)
    checked = [_item_values(items, name, columns, number, file, row) for name in items]
    return np.array(checked, dtype=np.float64).reshape(-1, len(columns))


def _item_values(
    items: Record,
    name: str,
    keys: Sequence[str],
    read: Callable[[Record, str, str, int], T],
    file: str,
    row: int,
) -> list[T]:
    """``read`` applied to each key of the object ``items[name]``; errors name ``name.key``."""
    item = nested(items, name, dict, file, row)
    return [read(item, f"{name}.{key}", file, row) for key in keys]


def _numeric_matrix(values: list, columns: Sequence[str]) -> np.ndarray | None:
    """The matrix when every value is an object with finite numbers (not booleans) in ``columns``."""
    try:
        array = pa.array(values)
    except pa.ArrowException:
        return None
    if not pa.types.is_struct(array.type) or array.null_count:
        return None
    names = {field.name for field in array.type}
    if not set(columns) <= names:
        return None
    fields = [array.field(column) for column in columns]
    if any(f.null_count or not (pa.types.is_integer(f.type) or pa.types.is_floating(f.type)) for f in fields):
        return None
    matrix = np.column_stack([f.to_numpy(zero_copy_only=False) for f in fields]).astype(np.float64)
    return matrix if np.isfinite(matrix).all() else None


def _check_times(
    times: np.ndarray, field: str, column: str, view: tuple[float, float], file: str, row: int
) -> None:
    """Timestamps must increase and lie inside the view, or durations and shares mean nothing."""
    backwards = np.flatnonzero(np.diff(times) <= 0)
    if backwards.size:
        i = backwards[0] + 1
        raise DataError(
            file,
            row,
            f"{field}[{i}].{column}",
            f"timestamps must increase: {times[i]:g} after {times[i - 1]:g}",
        )
    outside = np.flatnonzero((times < view[0]) | (times > view[1]))
    if outside.size:
        i = outside[0]
        raise DataError(
            file,
            row,
            f"{field}[{i}].{column}",
            f"{times[i]:g} ms is outside the view [{view[0]:g}, {view[1]:g}]",
        )
