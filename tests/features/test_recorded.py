from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from gazerm.features.base import FEATURE_SCALES, word_spans
from gazerm.features.recorded import detect_fixations, gaze_from_fixations

TEXT = "The baker kneads dough before baking it."  # 7 words
# Reader A: refixates "baker", regresses from "kneads" to "baker", skips "dough" in the first
# pass and regresses to it from "before"; never looks at "baking" or "it.".
READER_A = [  # (word, duration ms)
    (0, 200),
    (1, 250),
    (1, 100),
    (2, 180),
    (1, 150),
    (2, 120),
    (4, 220),
    (3, 100),
    (4, 160),
]
READER_B = [(0, 200), (2, 200), (4, 200)]
# Per reader, by hand:        nFix  FFD   GPT                   TRT  fixated
A = np.array(
    [
        [1, 200, 200, 200, 1],
        [3, 250, 250 + 100, 500, 1],  # go-past ends when "kneads" is fixated
        [2, 180, 180 + 150 + 120, 300, 1],  # includes the regression to "baker"
        [1, 100, 0, 100, 1],  # skipped in first pass: no go-past time
        [2, 220, 220 + 100 + 160, 380, 1],  # includes the regression to "dough"
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
    ],
    dtype=float,
)
B = np.array(
    [
        [1, 200, 200, 200, 1],
        [0, 0, 0, 0, 0],
        [1, 200, 200, 200, 1],
        [0, 0, 0, 0, 0],
        [1, 200, 200, 200, 1],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
    ],
    dtype=float,
)


def _fixation_table(readings: dict[str, list[tuple[int, int]]]) -> pl.DataFrame:
    rows = []
    for reader, fixations in readings.items():
        onset = 0
        for word, duration in fixations:
            rows.append(
                {"text_id": "t1", "reader": reader, "word_idx": word, "onset": onset, "duration": duration}
            )
            onset += duration + 30
    return pl.DataFrame(rows).reverse()  # order must come from onsets, not rows


def _aois(words: int, x0: float = 100.0, width: float = 60.0, gap: float = 10.0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "text_id": ["t1"] * words,
            "word_idx": list(range(words)),
            "x": [x0 + i * (width + gap) for i in range(words)],
            "y": [90.0] * words,
            "width": [width] * words,
            "height": [20.0] * words,
        }
    )


def test_hand_computed_measures_for_one_reader() -> None:
    gaze = gaze_from_fixations(_fixation_table({"A": READER_A}), {"t1": TEXT})
    assert gaze["t1"].spans == word_spans(TEXT)
    np.testing.assert_allclose(gaze["t1"].features * FEATURE_SCALES, A, rtol=1e-6)


def test_readers_are_averaged_and_ffd_only_over_readers_who_fixated() -> None:
    gaze = gaze_from_fixations(_fixation_table({"A": READER_A, "B": READER_B}), {"t1": TEXT, "unread": "x"})
    assert list(gaze) == ["t1"]
    expected = (A + B) / 2
    expected[:, 1] = [200, 250, 190, 100, 210, 0, 0]  # FFD: mean over the readers with a fixation
    np.testing.assert_allclose(gaze["t1"].features * FEATURE_SCALES, expected, rtol=1e-6)
    assert (gaze["t1"].features[:, 4] == [1, 0.5, 1, 0.5, 1, 0, 0]).all()


def test_fixations_are_placed_on_word_boxes() -> None:
    table = _fixation_table({"A": READER_A})
    boxes = _aois(7)
    centre = boxes["x"] + 30.0
    located = table.with_columns(
        pl.col("word_idx").replace_strict(list(range(7)), centre.to_list()).alias("x"),
        pl.lit(100.0).alias("y"),
    ).drop("word_idx")
    off_text = pl.DataFrame(
        {"text_id": ["t1"], "reader": ["A"], "onset": [5000], "duration": [300], "x": [900.0], "y": [100.0]}
    )
    gaze = gaze_from_fixations(pl.concat([located, off_text], how="diagonal_relaxed"), {"t1": TEXT}, boxes)
    np.testing.assert_allclose(
        gaze["t1"].features * FEATURE_SCALES, A, rtol=1e-6
    )  # off-text fixation ignored


def test_mismatched_words_and_missing_aois_fail_loudly() -> None:
    table = _fixation_table({"A": READER_A})
    with pytest.raises(ValueError, match="has 3 words but fixations refer to word 4"):
        gaze_from_fixations(table, {"t1": "Too short text"})
    with pytest.raises(ValueError, match="not among the given texts"):
        gaze_from_fixations(table, {"other": TEXT})
    with pytest.raises(ValueError, match="aois="):
        gaze_from_fixations(table.drop("word_idx"), {"t1": TEXT})


def _samples(reader: str, dwell: list[tuple[float, int]], saccade_ms: int = 20) -> pl.DataFrame:
    """1000 Hz samples resting at each x for its duration, with linear saccades and 0.3 px noise."""
    xs: list[float] = []
    for i, (x, duration) in enumerate(dwell):
        if i:
            xs += np.linspace(dwell[i - 1][0], x, saccade_ms + 2)[1:-1].tolist()
        xs += [x] * duration
    rng = np.random.default_rng(0)
    n = len(xs)
    return pl.DataFrame(
        {
            "text_id": ["t1"] * n,
            "reader": [reader] * n,
            "time": np.arange(n),
            "x": np.array(xs) + rng.normal(0, 0.3, n),
            "y": 100.0 + rng.normal(0, 0.3, n),
        }
    )


def test_raw_samples_through_pymovements_fixation_detection() -> None:
    boxes = _aois(7)
    centre = (boxes["x"] + 30.0).to_list()
    samples = pl.concat(
        [
            _samples("A", [(centre[0], 250), (centre[1], 230), (centre[2], 380)]),
            _samples("B", [(centre[0], 300), (centre[2], 300)]),
        ]
    )
    fixations = detect_fixations(samples)
    assert fixations.group_by("reader").len().sort("reader")["len"].to_list() == [3, 2]
    durations = fixations.sort("reader", "onset")["duration"].to_numpy()
    # I-DT keeps the first few saccade samples that are still within its 25 px window: up to ~8 ms.
    np.testing.assert_allclose(durations, [250, 230, 380, 300, 300], atol=10)

    features = gaze_from_fixations(fixations, {"t1": TEXT}, boxes)["t1"].features * FEATURE_SCALES
    np.testing.assert_allclose(features[:, 0], [1, 0.5, 1, 0, 0, 0, 0])  # nFix
    np.testing.assert_allclose(features[:3, 3], [275, 115, 340], atol=10)  # TRT, mean over both readers
    np.testing.assert_allclose(features[:, 4], [1, 0.5, 1, 0, 0, 0, 0])  # fixProp
