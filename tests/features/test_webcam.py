"""The webcam fixation rule and the behaviour features, on hand-made samples."""

from __future__ import annotations

import numpy as np
import pytest

from gazerm.features.webcam import (
    PAIRWISE_NAMES,
    Samples,
    char_words,
    mouse_motion,
    normalise_behaviour,
    pairwise_features,
    webcam_fixations,
)


def _samples(lines, times, next_times=None) -> Samples:
    times = np.array(times, dtype=float)
    following = np.append(times[1:], times[-1]) if next_times is None else np.array(next_times, dtype=float)
    return Samples(np.array(lines), times, following)


def test_char_words_maps_whitespace_to_the_word_before():
    assert char_words("ab  cd e", np.array([0, 1, 2, 3, 4, 7])).tolist() == [0, 0, 0, 0, 1, 2]


def test_fixations_anchor_on_the_first_word_so_steady_reading_does_not_fuse():
    found = webcam_fixations(_samples(range(6), [0, 70, 140, 210, 280, 350]), np.array([3, 4, 5, 6, 7, 7]))
    # 3,4 → one fixation on 3; 5,6 → one on 5; 7,7 → one on 7 (the last sample lasts 0 ms: 70 ms, dropped)
    assert found.word.tolist() == [3, 5] and found.duration.tolist() == [140, 140]


def test_a_gap_caps_the_sample_and_ends_the_fixation():
    found = webcam_fixations(_samples([0, 1, 2], [0, 100, 1000], [100, 1000, 1200]), np.array([2, 2, 2]))
    assert found.word.tolist() == [2, 2] and found.duration.tolist() == [400, 200]  # 100 + 300 (cap); 200


def test_a_line_between_samples_ends_the_fixation_and_short_ones_are_dropped():
    found = webcam_fixations(_samples([0, 2], [0, 200], [50, 350]), np.array([1, 1]))
    assert found.word.tolist() == [1] and found.onset.tolist() == [200]  # the first lasts 50 ms


def test_mouse_path_and_moving_time():
    samples = _samples([0, 1, 2, 3], [0, 100, 200, 300], [100, 200, 300, 400])
    path, moving, total = mouse_motion(samples, np.array([0.0, 3, 3, -1]), np.array([0.0, 4, 4, -1]))
    assert (path, moving, total) == (5.0, 100.0, 400.0)  # 5 px in 100 ms is 50 px/s, then still, then off


def test_pairwise_variants_and_scales():
    own = np.array([30.0, 0.5, 0.4, 0.1, 0.2, 2500.0, 0.5])
    other = np.array([10.0, 0.25, 0.3, 0.0, 0.1, 0.0, 1.0])
    vector = dict(zip(PAIRWISE_NAMES, normalise_behaviour(pairwise_features(own, other)), strict=True))
    assert vector["dwell_s"] == 0.5 and vector["mouse_path_px"] == 0.5
    assert (
        vector["dwell_share"] == 0.75
        and vector["completion_diff"] == 0.25
        and vector["mouse_path_share"] == 1
    )
    alone = pairwise_features(np.zeros(7), None)
    assert alone[-3:].tolist() == pytest.approx([0.5, 0.0, 0.5])
