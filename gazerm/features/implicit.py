"""Implicit behaviour features of a response (IFLLM-style): how long people stayed on it, how they
scrolled and moved the mouse, and how their (webcam) gaze fixated, computed from session logs.

The names and their order are the contract between ``prepare`` (which joins them into the
``implicit`` column, one vector per response) and the reward model's implicit-feature input.

Session log (read and validated by :mod:`gazerm.data.loaders.sessions` into :class:`SessionView`
records): JSONL (or any file :func:`gazerm.data.readers.read_records` reads), one record per
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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from tqdm import tqdm

if TYPE_CHECKING:
    import polars as pl

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


def normalise_implicit(raw: np.ndarray) -> np.ndarray:
    """Raw features (s, counts, px, px/s, share, ms) in the last axis → the common scale, float32."""
    return (np.asarray(raw, dtype=np.float32) / IMPLICIT_SCALES).astype(np.float32)


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
    # Slow to import, and only session logs with raw gaze need them (training workers import this
    # module for N_IMPLICIT alone).
    import polars as pl

    from gazerm.features.recorded import detect_fixations

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
    import polars as pl

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
