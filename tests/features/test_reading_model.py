from __future__ import annotations

import numpy as np
from wordfreq import zipf_frequency

from gazerm.features.base import FEATURE_NAMES, FEATURE_SCALES, word_spans
from gazerm.features.reading_model import ReadingTimeModel


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + np.exp(-x))


def _raw(text: str) -> np.ndarray:
    return ReadingTimeModel().predict([text])[0].features * FEATURE_SCALES


def test_single_word_values_follow_the_documented_equations() -> None:
    # "Reading," is the text's first word (never skipped) and its last (wrap-up), 7 letters.
    dz = zipf_frequency("reading", "en") - 4.0
    ffd = 220 - 9 * dz
    p_refix = _sigmoid(-1.6 + 0.3 * 2 - 0.2 * dz)
    gaze = ffd + 175 * p_refix + 40
    p_regress = _sigmoid(-2.4 - 0.15 * dz + 1.2)
    p_reread = _sigmoid(-2.2 + 0.1 * 2 - 0.2 * dz)
    expected = [1 + p_refix + p_reread, ffd, gaze + 300 * p_regress, gaze + 200 * p_reread, 1.0]
    np.testing.assert_allclose(_raw("Reading,")[0], expected, rtol=1e-5)


def test_rare_long_words_cost_more_than_short_frequent_ones() -> None:
    text = "We saw the notwithstanding dog."
    features = dict(zip(text.split(), _raw(text), strict=True))
    the, rare = features["the"], features["notwithstanding"]
    for name, easy, hard in zip(FEATURE_NAMES, the, rare, strict=True):
        assert hard > easy, name
    assert the[4] < 0.5 < 0.99 < rare[4]  # "the" mostly skipped, the long rare word almost never
    assert rare[0] > 1.5  # and usually refixated


def test_batches_equal_one_by_one_and_empty_texts_have_no_words() -> None:
    texts = ["Knead the dough. Then bake it!", "", "   ", "— a dash, 42 and eye-tracking."]
    model = ReadingTimeModel()
    together = model.predict(texts)
    for text, result in zip(texts, together, strict=True):
        alone = model.predict([text])[0]
        assert result.spans == alone.spans == word_spans(text)
        np.testing.assert_array_equal(result.features, alone.features)
        assert result.features.dtype == np.float32
    assert [len(r.spans) for r in together] == [6, 0, 0, 6]
    assert model.predict([]) == [] and model.predict([""])[0].features.shape == (0, 5)


def test_positions_sentences_and_text_boundaries() -> None:
    # Two texts of three equal words (5 letters, Zipf 4): "w w w." and "w w. w".
    length, zipf = np.full(6, 5.0), np.full(6, 4.0)
    ends = np.array([False, False, True, False, True, False])
    raw = ReadingTimeModel.raw_measures(length, zipf, ends, counts=np.array([3, 3]))
    p_refix, p_reread = _sigmoid(-1.6), _sigmoid(-2.2)
    # Word 1 of text 1: mid-sentence, second position (pred = 0.1), no wrap-up.
    p_skip = _sigmoid(-1.8 + 0.3 * 0.1)
    ffd = 220 - 8 * 0.1
    gaze = ffd + 175 * p_refix
    expected = [
        (1 - p_skip) * (1 + p_refix) + p_reread,
        ffd,
        (1 - p_skip) * (gaze + 300 * _sigmoid(-2.4)),
        (1 - p_skip) * gaze + 200 * p_reread,
        1 - p_skip * (1 - p_reread),
    ]
    np.testing.assert_allclose(raw[1], expected, rtol=1e-6)
    # Texts are independent: each starts afresh (never skipped), so their first words match.
    np.testing.assert_allclose(raw[3], raw[0])
    assert raw[0, 4] == 1.0
    # The last word of text 2 starts a sentence (position 0, skipped less) and ends the text
    # (40 ms wrap-up, more regressions).
    p_skip = _sigmoid(-1.8 - 1.0)
    gaze = 220 + 175 * p_refix + 40
    np.testing.assert_allclose(raw[5, 2], (1 - p_skip) * (gaze + 300 * _sigmoid(-2.4 + 1.2)), rtol=1e-6)
    np.testing.assert_allclose(raw[5, 4], 1 - p_skip * (1 - p_reread), rtol=1e-6)
