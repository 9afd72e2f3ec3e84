"""The IFLLM release's relative traces (``rel_*.csv``): one gaze or mouse sample per line, as arrays.

A line is ``x, y, window, centre_idx, rel_ts, flag, abs_ts`` (files of the first study rounds have no
``flag``: six fields). ``window`` is the text under the point (up to ~20 characters of one line) and
``centre_idx`` the caret offset of the point in the response's text node; ``x, y = -1, -1`` means the
point is not on this panel. The study's page wrote ``window`` between double quotes without escaping
the quotes or commas inside it, so a CSV parser splits such lines wrongly (the release's own reader
skips them); here a line is split at its first two and its last three (or four) commas instead, and the
window is what lies between. A line is seven-field when it has seven fields or more and its second-to-last
field is a flag (``0``/``1``), else six-field (a six-field line whose ``rel_ts`` is exactly 0 or 1 would
be misread; the release has none). A line whose numbers do not parse is a ``DataError``
naming the file, line and field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gazerm.data.errors import DataError

FLAGS = ("0", "1")


@dataclass(frozen=True)
class Trace:
    """One ``rel_*`` file: per sample (line order) its time (``rel_ts``, ms), panel position, window
    text and character index (-1 where the page gave none)."""

    file: str
    t_ms: np.ndarray
    x: np.ndarray
    y: np.ndarray
    windows: list[str]
    centre: np.ndarray

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def off_panel(self) -> np.ndarray:
        return (self.x == -1) & (self.y == -1)

    def next_times(self) -> np.ndarray:
        """Each sample's following sample time (the last sample's own time: it lasts 0 ms)."""
        return np.append(self.t_ms[1:], self.t_ms[-1:]) if len(self) else self.t_ms


def read_trace(path: str | Path) -> Trace:
    """Parse one ``rel_*`` file; a missing file or a bad line is a :class:`DataError`."""
    file = str(path)
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(file, None, None, f"cannot read the trace ({exc})") from exc
    rows = [_line(line, file, row) for row, line in enumerate(lines, start=1) if line.strip()]
    x, y, windows, centre, t_ms = zip(*rows, strict=True) if rows else ((), (), (), (), ())
    return Trace(
        file,
        np.array(t_ms, dtype=np.float64),
        np.array(x, dtype=np.float64),
        np.array(y, dtype=np.float64),
        list(windows),
        np.array(centre, dtype=np.int64),
    )


def _line(line: str, file: str, row: int) -> tuple[float, float, str, int, float]:
    fields = line.split(",")
    if len(fields) < 6:
        raise DataError(file, row, None, f"expected 6 or 7 comma-separated fields, got {len(fields)}")
    tail = 4 if len(fields) >= 7 and fields[-2] in FLAGS else 3
    head, *rest = line.rsplit(",", tail)
    x, y, window = head.split(",", 2)
    if len(window) >= 2 and window[0] == window[-1] == '"':
        window = window[1:-1]
    centre = rest[0].strip()
    if centre and not centre.lstrip("-").isdigit():
        raise DataError(file, row, "centre_idx", f"expected an integer, got {centre!r:.40}")
    return (
        _number(x, file, row, "x"),
        _number(y, file, row, "y"),
        window,
        int(centre) if centre else -1,
        _number(rest[1], file, row, "rel_ts"),
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _number(text: str, file: str, row: int, field: str) -> float:
    if not _is_number(text):
        raise DataError(file, row, field, f"expected a number, got {text!r:.40}")
    return float(text)
