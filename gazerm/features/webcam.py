"""Webcam gaze on text → fixations, per-word reading measures and per-response behaviour features.

Pure functions over arrays: the IFLLM loader (``gazerm.data.loaders.ifllm``) reads the traces and
says which samples fall on which response; this module turns them into features.

**Fixations.** IFLLM's browser tracker (WebGazer) gives one sample every ~70 ms (the release's median
spacing is 71.5 ms; 5-95 % 49-157 ms), each already placed on a character of the text (``centre_idx``),
with errors of several words. I-DT on a 20 ms grid needs far denser and steadier samples, so the rule
works on words instead: consecutive samples (adjacent trace lines, both on this response's text) whose
word is within :data:`MERGE_WORDS` of the first word of the current fixation belong to that fixation,
placed on its first word. A sample lasts until the next sample of the trace, at most
:data:`SAMPLE_CAP_MS` (300 ms, about twice the 95th percentile of the spacing: a longer gap is lost
frames, and where the eye was meanwhile is unknown, so such a gap also ends the fixation). A fixation
lasts the sum of its samples' durations and is kept from :data:`MIN_FIXATION_MS` (100 ms: two typical
samples; shorter reading fixations are rare, Rayner 1998). Anchoring at the first word, not chaining
neighbours, keeps steady left-to-right reading (word 3, 4, 5, ...) from fusing into one long fixation.

**Per-word measures** come from these fixations through pymovements, as for lab recordings
(``gazerm.features.recorded.gaze_from_fixations``; one reading per response, so fixProp is 0 or 1).

**Behaviour features** (:data:`BEHAVIOUR_NAMES`; raw units, divided by :data:`BEHAVIOUR_SCALES` as in
``gazerm.features.implicit``, so typical values lie in [0, 1]):

- ``dwell_s``: time on the response's text, the capped durations of its on-text samples (scale 60 s);
- ``reading_completion``: share of the response's words fixated;
- ``reading_position``: mean fixated word index / number of words;
- ``regression_share``: share of moves between consecutive fixations that go back to an earlier word;
- ``off_panel_share``: share of the response's samples off its panel (IFLLM's ``-1, -1``: the other
  panel, elsewhere, or no face found);
- ``mouse_path_px``: mouse path on the panel while the response was shown (scale 5000 px);
- ``mouse_idle_share``: share of that time without mouse movement (slower than 20 px/s, as in
  ``gazerm.features.implicit``; 1 without mouse samples).

Pairwise tasks add the response's standing against the other one (:data:`PAIRWISE_NAMES`):
``dwell_share`` (its share of the pair's dwell, 0.5 when neither was read), ``completion_diff`` (its
completion minus the other's, in [-1, 1]) and ``mouse_path_share`` (its share of the pair's mouse path,
0.5 without movement).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gazerm.features.base import WordGaze, word_spans
from gazerm.features.implicit import MOUSE_IDLE_SPEED_PX_S

SAMPLE_CAP_MS = 300.0
MIN_FIXATION_MS = 100.0
MERGE_WORDS = 1

BEHAVIOUR_NAMES = (
    "dwell_s",
    "reading_completion",
    "reading_position",
    "regression_share",
    "off_panel_share",
    "mouse_path_px",
    "mouse_idle_share",
)
BEHAVIOUR_SCALES = np.array([60.0, 1.0, 1.0, 1.0, 1.0, 5000.0, 1.0], dtype=np.float32)
PAIRWISE_NAMES = (*BEHAVIOUR_NAMES, "dwell_share", "completion_diff", "mouse_path_share")
PAIRWISE_SCALES = np.concatenate([BEHAVIOUR_SCALES, np.ones(3, dtype=np.float32)])
_DWELL, _COMPLETION, _MOUSE_PATH = (
    BEHAVIOUR_NAMES.index(n) for n in ("dwell_s", "reading_completion", "mouse_path_px")
)


@dataclass(frozen=True)
class Fixations:
    """Fixations on one text, in time order: word index (``word_spans``), onset and duration (ms)."""

    word: np.ndarray
    onset: np.ndarray
    duration: np.ndarray

    def __len__(self) -> int:
        return len(self.word)


@dataclass(frozen=True)
class Samples:
    """Samples of one trace attributed to one response, in time order: trace line, time (ms), the next
    sample's time in the trace (ms), and the word (gaze on text) or panel position (mouse)."""

    line: np.ndarray
    t_ms: np.ndarray
    next_ms: np.ndarray

    def durations(self) -> np.ndarray:
        """Each sample's duration: until the next sample of the trace, capped at :data:`SAMPLE_CAP_MS`."""
        return np.minimum(self.next_ms - self.t_ms, SAMPLE_CAP_MS)


@dataclass(frozen=True)
class ResponseBehaviour:
    """What one response's traces give: its on-text gaze samples and their words, how many of its
    samples there were and were off the panel, and its mouse path and moving time."""

    n_words: int
    on_text: Samples
    words: np.ndarray
    samples: int
    off_panel: int
    mouse_path_px: float
    mouse_moving_ms: float
    mouse_ms: float

    @property
    def fixations(self) -> Fixations:
        return webcam_fixations(self.on_text, self.words)


def char_words(text: str, chars: np.ndarray) -> np.ndarray:
    """The word of ``word_spans(text)`` at each character index: the word holding it, or the one before
    it when it is whitespace (the first word before any)."""
    starts = np.array([start for start, _ in word_spans(text)], dtype=np.int64)
    return np.maximum(np.searchsorted(starts, chars, side="right") - 1, 0)


def webcam_fixations(samples: Samples, words: np.ndarray) -> Fixations:
    """Fixations from on-text samples and their words, by the rule of the module docstring."""
    durations = samples.durations()
    fixations: list[list[float]] = []
    anchor = -1
    for k in range(len(words)):
        joins = (
            k > 0
            and samples.line[k] == samples.line[k - 1] + 1
            and samples.t_ms[k] - samples.t_ms[k - 1] <= SAMPLE_CAP_MS
            and abs(int(words[k]) - anchor) <= MERGE_WORDS
        )
        if joins:
            fixations[-1][2] += durations[k]
        else:
            anchor = int(words[k])
            fixations.append([anchor, samples.t_ms[k], durations[k]])
    kept = np.array([f for f in fixations if f[2] >= MIN_FIXATION_MS], dtype=np.float64).reshape(-1, 3)
    return Fixations(kept[:, 0].astype(np.int64), kept[:, 1], kept[:, 2])


def word_gaze(texts: Mapping[str, str], fixations: Mapping[str, Fixations]) -> dict[str, WordGaze]:
    """Normalised per-word gaze of every text with at least one fixation (one reading each)."""
    import polars as pl

    from gazerm.features.recorded import gaze_from_fixations

    read = [key for key, found in fixations.items() if len(found)]
    if not read:
        return {}
    table = pl.DataFrame(
        {
            "text_id": [key for key in read for _ in range(len(fixations[key]))],
            "word_idx": np.concatenate([fixations[key].word for key in read]),
            "onset": np.concatenate([fixations[key].onset for key in read]),
            "duration": np.concatenate([fixations[key].duration for key in read]),
        }
    )
    return gaze_from_fixations(table, {key: texts[key] for key in read})


def mouse_motion(samples: Samples, x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Path length (px) between consecutive on-panel samples, the time spent moving faster than the idle
    speed, and the samples' whole time (ms): what ``mouse_path_px`` and ``mouse_idle_share`` need."""
    durations = samples.durations()
    on_panel = ~((x == -1) & (y == -1))
    steps = np.hypot(np.diff(x), np.diff(y))
    linked = (np.diff(samples.line) == 1) & on_panel[1:] & on_panel[:-1]
    intervals = np.diff(samples.t_ms)
    moving = linked & (steps * 1000 > MOUSE_IDLE_SPEED_PX_S * intervals)
    return float(steps[linked].sum()), float(durations[:-1][moving].sum()), float(durations.sum())


def behaviour_features(behaviour: ResponseBehaviour) -> np.ndarray:
    """The raw :data:`BEHAVIOUR_NAMES` vector of one response (s, shares, px, share)."""
    fixations = behaviour.fixations
    n_words = max(behaviour.n_words, 1)
    moves = np.diff(fixations.word)
    return np.array(
        [
            behaviour.on_text.durations().sum() / 1000,
            len(np.unique(fixations.word)) / n_words,
            fixations.word.mean() / n_words if len(fixations) else 0.0,
            (moves < 0).mean() if len(moves) else 0.0,
            behaviour.off_panel / behaviour.samples if behaviour.samples else 0.0,
            behaviour.mouse_path_px,
            1 - behaviour.mouse_moving_ms / behaviour.mouse_ms if behaviour.mouse_ms else 1.0,
        ]
    )


def pairwise_features(own: np.ndarray, other: np.ndarray | None) -> np.ndarray:
    """A response's raw :data:`PAIRWISE_NAMES` vector from its and the other response's raw behaviour
    features; a partner without behaviour counts as all zeros."""
    other = np.zeros_like(own) if other is None else other
    return np.concatenate(
        [
            own,
            [
                _share(own[_DWELL], other[_DWELL]),
                own[_COMPLETION] - other[_COMPLETION],
                _share(own[_MOUSE_PATH], other[_MOUSE_PATH]),
            ],
        ]
    )


def normalise_behaviour(raw: np.ndarray) -> np.ndarray:
    """Raw behaviour (or pairwise) features → the common scale, float32."""
    scales = BEHAVIOUR_SCALES if raw.shape[-1] == len(BEHAVIOUR_NAMES) else PAIRWISE_SCALES
    return (np.asarray(raw, dtype=np.float32) / scales).astype(np.float32)


def _share(own: float, other: float) -> float:
    return own / (own + other) if own + other > 0 else 0.5
