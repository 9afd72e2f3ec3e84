"""Implicit behaviour features of a response (IFLLM-style): how long people stayed on it, how they
scrolled and moved the mouse, and how their (webcam) gaze fixated, computed from session logs.

The names and their order are the contract between ``prepare`` (which joins them into the
``implicit`` column, one vector per response) and the reward model's implicit-feature input.

Session log: JSONL (or any file :func:`gazerm.data.readers.read_records` reads), one record per
session and viewed response, after IFLLM's set-up (people read LLM answers in a browser while the
page logs scrolling, the mouse and webcam gaze). Times are ms on one clock, positions page pixels::

    {"session_id": "s1", "prompt": "...", "context": [{"role": "user", "content": "..."}],
     "response": "...", "view": {"start_ms": 0, "end_ms": 8000}, "page_height": 1800,
     "scroll": [{"t": 900, "y": 400}, ...], "mouse": [{"t": 120, "x": 300, "y": 220}, ...],
     "gaze": [{"t": 0, "x": 512, "y": 300}, ...]}

``context`` (earlier turns), ``page_height`` (scrollable height in px, default
:data:`DEFAULT_PAGE_HEIGHT_PX`), ``scroll`` and ``mouse`` are optional. Eye tracking comes either
as raw ``gaze`` samples (any rate; resampled to a fixed grid and run through pymovements' I-DT
via :func:`gazerm.features.recorded.detect_fixations`) or as already detected ``fixations``
(``[{"onset", "duration", "x", "y"}]``), not both; a record with neither has no fixations.
Timestamps of each list must increase and lie inside the view. A response is identified by its
prompt, context and text, which is how ``prepare`` matches it to the preference data.

Features per record (raw units, then divided by :data:`IMPLICIT_SCALES`):

- ``dwell_s``: view end - start; ``scroll_events``: number of scroll samples; ``scroll_depth``:
  deepest scroll offset / page height;
- ``mouse_distance_px``: mouse path length; ``mouse_speed_px_s``: mean speed while moving (path
  of the moving intervals / their time); ``mouse_idle_share``: share of the view not spent in
  an interval between mouse samples faster than :data:`MOUSE_IDLE_SPEED_PX_S` (time without mouse
  samples is idle: browsers log the mouse only when it moves);
- ``fixation_count`` and ``fixation_mean_ms`` (0 without fixations).

Several records of one response (several sessions, or revisits) are averaged per feature.
Normalisation follows :mod:`gazerm.features.base`: fixed reference constants, roughly what a
long but ordinary view of a few-hundred-word answer gives, so typical values lie in [0, 1]
whatever the dataset, and the same view gets the same vector in training and scoring.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np
import polars as pl
import pyarrow as pa
from tqdm import tqdm

from gazerm.data.errors import DataError
from gazerm.data.loaders.common import nested, number, optional, text
from gazerm.data.readers import Record, read_records, require

IMPLICIT_FEATURE_NAMES = (
    "dwell_s",
    "scroll_events",
    "scroll_depth",
    "mouse_distance_px",
    "mouse_speed_px_s",
    "mouse_idle_share",
    "fixation_count",
    "fixation_mean_ms",
)
N_IMPLICIT = len(IMPLICIT_FEATURE_NAMES)

# Reference constants, in IMPLICIT_FEATURE_NAMES order: a 60 s view (a ~250-word answer read at
# ~250 words/min), 20 scroll events, the whole page, 5000 px of mouse path, 1000 px/s (a brisk
# pointing movement), the whole view idle, 200 fixations (~4 per second for 50 s) and 400 ms
# (the first-fixation scale of gazerm.features.base).
IMPLICIT_SCALES = np.array([60.0, 20.0, 1.0, 5000.0, 1000.0, 1.0, 200.0, 400.0], dtype=np.float32)

DEFAULT_PAGE_HEIGHT_PX = 2000.0
# Slower pointer drift (hand tremor, sensor noise) is not movement.
MOUSE_IDLE_SPEED_PX_S = 20.0
# Webcam gaze (IFLLM used a browser webcam tracker) is irregular, ~30 Hz and noisy: pymovements' I-DT
# needs a constant rate, so samples are interpolated onto a 20 ms grid; the dispersion threshold is
# webcam accuracy (~100 px) rather than a lab tracker's 1°, and 100 ms is 3 webcam frames.
WEBCAM_GRID_MS = 20
WEBCAM_DISPERSION_PX = 100.0
WEBCAM_MIN_FIXATION_MS = 100
# pymovements' detection slows down faster than linearly with the trials in one call.
VIEWS_PER_DETECTION = 10

T = TypeVar("T")


class ResponseKey(NamedTuple):
    """What identifies a response across the session logs and the preference data."""

    prompt: str
    context: tuple[tuple[str, str], ...]
    response: str

    @classmethod
    def of(cls, prompt: str, context: Sequence[dict[str, str]] | None, response: str) -> ResponseKey:
        turns = tuple((turn["role"], turn["content"]) for turn in context or ())
        return cls(prompt, turns, response)


@dataclass
class SessionView:
    """One validated log record: one session's view of one response, samples as float arrays."""

    file: str
    row: int
    session_id: str
    key: ResponseKey
    start_ms: float
    end_ms: float
    page_height: float
    scroll: np.ndarray  # (n, 2): t, y
    mouse: np.ndarray  # (n, 3): t, x, y
    gaze: np.ndarray  # (n, 3): t, x, y raw samples
    fixations: np.ndarray  # (n, 2): onset, duration; empty when the record has raw gaze instead


@dataclass
class ImplicitFeatures:
    """Normalised features per response (mean over its views) and the records behind each response."""

    features: dict[ResponseKey, np.ndarray]
    views: dict[ResponseKey, list[SessionView]]

    @property
    def records(self) -> int:
        return sum(len(views) for views in self.views.values())


def load_implicit(paths: Sequence[str | Path]) -> ImplicitFeatures:
    """Read every session log and average each response's normalised features over its views."""
    views = [view for path in paths for view in read_session_log(path)]
    features = normalise_implicit(behaviour_features(views))
    index: dict[ResponseKey, int] = {}
    groups = np.array([index.setdefault(view.key, len(index)) for view in views], dtype=np.int64)
    sums = np.zeros((len(index), N_IMPLICIT), dtype=np.float64)
    np.add.at(sums, groups, features)
    means = (sums / np.bincount(groups, minlength=len(index))[:, None]).astype(np.float32)
    by_key: dict[ResponseKey, list[SessionView]] = {key: [] for key in index}
    for view in views:
        by_key[view.key].append(view)
    return ImplicitFeatures({key: means[i] for key, i in index.items()}, by_key)


def normalise_implicit(raw: np.ndarray) -> np.ndarray:
    """Raw features (s, counts, px, px/s, share, ms) in the last axis → the common scale, float32."""
    return (np.asarray(raw, dtype=np.float32) / IMPLICIT_SCALES).astype(np.float32)


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
    if record.get("context") is None:
        return ()
    turns = nested(record, "context", list, file, row)
    return tuple(tuple(_item_values(turns, name, ("role", "content"), text, file, row)) for name in turns)


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


def behaviour_features(views: Sequence[SessionView]) -> np.ndarray:
    """``(len(views), N_IMPLICIT)`` raw features; raw gaze goes through pymovements fixation detection."""
    fixations = detected_fixations(views)
    rows = [_view_features(view, fixations.get(i, view.fixations)) for i, view in enumerate(views)]
    return np.array(rows, dtype=np.float64).reshape(-1, N_IMPLICIT)


def detected_fixations(views: Sequence[SessionView]) -> dict[int, np.ndarray]:
    """``(onset, duration)`` fixations (``(n, 2)``) of every view with raw gaze, by position in ``views``."""
    with_gaze = [i for i, view in enumerate(views) if len(view.gaze) > 1]  # one sample is no fixation
    if not with_gaze:
        return {}
    from gazerm.features.recorded import detect_fixations  # pymovements is slow to import

    found = {i: np.empty((0, 2)) for i in with_gaze}
    chunks = [with_gaze[k : k + VIEWS_PER_DETECTION] for k in range(0, len(with_gaze), VIEWS_PER_DETECTION)]
    for chunk in tqdm(
        chunks, desc="webcam fixations", unit=" chunks", mininterval=2.0, disable=len(chunks) < 2
    ):
        samples = pl.concat([_on_grid(str(i), views[i].gaze) for i in chunk])
        events = detect_fixations(
            samples,
            group_columns=("view",),
            dispersion_threshold=WEBCAM_DISPERSION_PX,
            minimum_duration=WEBCAM_MIN_FIXATION_MS,
        )
        for (view,), part in events.partition_by("view", as_dict=True).items():
            found[int(view)] = part.select("onset", "duration").to_numpy().astype(np.float64)
    return found


def _on_grid(view: str, gaze: np.ndarray) -> pl.DataFrame:
    """Raw samples linearly interpolated onto the :data:`WEBCAM_GRID_MS` grid I-DT needs."""
    t, x, y = gaze.T
    grid = np.arange(np.ceil(t[0]), t[-1] + 1, WEBCAM_GRID_MS)
    return pl.DataFrame(
        {"view": view, "time": grid.astype(np.int64), "x": np.interp(grid, t, x), "y": np.interp(grid, t, y)}
    )


def _view_features(view: SessionView, fixations: np.ndarray) -> list[float]:
    dwell_ms = view.end_ms - view.start_ms
    steps = np.hypot(*np.diff(view.mouse[:, 1:], axis=0).T)
    intervals_ms = np.diff(view.mouse[:, 0])
    moving = steps * 1000 > MOUSE_IDLE_SPEED_PX_S * intervals_ms
    moving_ms = intervals_ms[moving].sum()
    scroll_depth = view.scroll[:, 1].max() / view.page_height if len(view.scroll) else 0.0
    return [
        dwell_ms / 1000,
        len(view.scroll),
        scroll_depth,
        steps.sum(),
        steps[moving].sum() / moving_ms * 1000 if moving_ms else 0.0,
        1 - moving_ms / dwell_ms,
        len(fixations),
        fixations[:, 1].mean() if len(fixations) else 0.0,
    ]
