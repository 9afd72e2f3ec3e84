from __future__ import annotations

import numpy as np
import pytest

from gazerm.features.base import FEATURE_NAMES, FEATURE_SCALES, GazePredictor, WordGaze, normalise, word_spans
from gazerm.features.reading_model import ReadingTimeModel


def test_words_are_whitespace_runs_with_punctuation_attached() -> None:
    text = "  Hello,  world!\n(ok) don't\teye-tracking"
    spans = word_spans(text)
    assert spans == [(2, 8), (10, 16), (17, 21), (22, 27), (28, 40)]
    assert [text[a:b] for a, b in spans] == ["Hello,", "world!", "(ok)", "don't", "eye-tracking"]
    assert word_spans("") == [] and word_spans(" \n\t ") == []


def test_normalisation_divides_by_fixed_constants() -> None:
    assert FEATURE_NAMES == ("nFix", "FFD", "GPT", "TRT", "fixProp")
    raw = np.array([[2.0, 200.0, 500.0, 400.0, 0.5]])
    np.testing.assert_allclose(normalise(raw), [[0.5, 0.5, 0.5, 0.5, 0.5]])
    assert normalise(raw).dtype == np.float32


def test_word_gaze_checks_its_shape() -> None:
    with pytest.raises(ValueError, match=r"shape \(2, 5\)"):
        WordGaze([(0, 1), (2, 3)], np.zeros((2, 4), np.float32))


def test_reading_model_is_a_gaze_predictor() -> None:
    assert isinstance(ReadingTimeModel(), GazePredictor)
    assert FEATURE_SCALES.shape == (5,)
