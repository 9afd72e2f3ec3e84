from __future__ import annotations

import numpy as np
import pytest

from gazerm.features.alignment import token_gaze
from gazerm.features.base import word_spans
from gazerm.model.tokenizers import build_local_tokenizer

PROMPT = "Q: bake? A: "
# "qvj" has no letter pair in the tokenizers' training corpus, so it splits into single letters
# whatever merges training picks (the local WordPiece training is not fully reproducible).
RESPONSE = "Knead qvj, then bake."
# One row per word: Knead, "qvj,", then, "bake." — nFix, FFD, GPT, TRT, fixProp.
FEATURES = np.array(
    [
        [1.2, 0.5, 0.6, 0.9, 1.0],
        [2.0, 0.6, 1.2, 0.8, 0.9],
        [0.5, 0.4, 0.3, 0.2, 0.5],
        [1.0, 0.7, 0.8, 0.4, 0.8],
    ],
    dtype=np.float32,
)


def _align(style: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    tokenizer = build_local_tokenizer(style)
    encoded = tokenizer(PROMPT + RESPONSE, return_offsets_mapping=True)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    features, mask = token_gaze(
        encoded["offset_mapping"], word_spans(RESPONSE), FEATURES, char_shift=len(PROMPT)
    )
    return tokens, features, mask


def _word_row(word: int, pieces: int) -> list[float]:
    """A word's features on each of its ``pieces`` tokens: nFix, GPT, TRT divided, FFD, fixProp copied."""
    n_fix, ffd, gpt, trt, fix_prop = FEATURES[word]
    return [n_fix / pieces, ffd, gpt / pieces, trt / pieces, fix_prop]


def test_byte_level_bpe_with_leading_spaces() -> None:
    tokens, features, mask = _align("llama")
    assert tokens == [
        "<s>",
        "Q",
        ":",
        "Ġbake",
        "?",
        "Ġ",
        "A",
        ":",
        "Ġ",  # prompt ("Ġ" = its trailing space)
        "K",
        "n",
        "ead",
        "Ġ",
        "q",
        "v",
        "j",
        ",",
        "Ġthen",
        "Ġbake",
        ".",
    ]
    expected = np.zeros((len(tokens), 5), np.float32)
    expected[9:12] = _word_row(0, 3)
    expected[13:17] = _word_row(1, 4)  # the lone space token before "qvj," is in no word
    expected[17] = _word_row(2, 1)  # "Ġthen" carries the space before "then" but belongs to it
    expected[18:20] = _word_row(3, 2)
    np.testing.assert_allclose(features, expected, rtol=1e-6)
    assert mask.tolist() == [False] * 9 + [True] * 3 + [False] + [True] * 7


def test_wordpiece_with_special_tokens() -> None:
    tokens, features, mask = _align("bert")
    assert tokens == [
        "[CLS]",
        "q",
        ":",
        "bake",
        "?",
        "a",
        ":",
        "knead",
        "q",
        "##v",
        "##j",
        ",",
        "then",
        "bake",
        ".",
        "[SEP]",
    ]
    expected = np.zeros((len(tokens), 5), np.float32)
    expected[7] = _word_row(0, 1)
    expected[8:12] = _word_row(1, 4)
    expected[12] = _word_row(2, 1)
    expected[13:15] = _word_row(3, 2)
    np.testing.assert_allclose(features, expected, rtol=1e-6)
    assert mask.tolist() == [False] * 7 + [True] * 8 + [False]


@pytest.mark.parametrize("style", ["llama", "bert"])
def test_additive_measures_sum_back_to_the_word(style: str) -> None:
    _, features, mask = _align(style)
    totals = features[mask][:, [0, 2, 3]].sum(axis=0)
    np.testing.assert_allclose(totals, FEATURES[:, [0, 2, 3]].sum(axis=0), rtol=1e-5)


def test_divide_all_spreads_every_measure_over_a_words_tokens_as_the_reference_does() -> None:
    offsets = [(0, 0), (0, 3), (3, 6), (6, 8), (9, 12)]  # BOS, "bre"+"ado"+"ne" = word 0, "two" = word 1
    spans = [(0, 8), (9, 12)]
    words = np.array([[3, 90, 300, 240, 0.6], [1, 50, 50, 50, 0.3]], np.float32)
    gazerm, mask = token_gaze(offsets, spans, words)
    reference, same_mask = token_gaze(offsets, spans, words, divide_all=True)
    assert mask.tolist() == same_mask.tolist() == [False, True, True, True, True]
    np.testing.assert_allclose(reference[1:4], np.repeat(words[:1] / 3, 3, axis=0), rtol=1e-6)
    np.testing.assert_allclose(reference[4], words[1], rtol=1e-6)  # one token: its word's values
    np.testing.assert_allclose(gazerm[1, [1, 4]], words[0, [1, 4]])  # FFD, fixProp copied by default


def test_no_words_or_only_special_tokens_carry_no_gaze() -> None:
    features, mask = token_gaze([(0, 0), (0, 4), (0, 0)], [], np.zeros((0, 5), np.float32))
    assert features.shape == (3, 5) and not features.any() and not mask.any()
    features, mask = token_gaze([(0, 0), (0, 0)], [(0, 4)], np.ones((1, 5), np.float32))
    assert not mask.any()
