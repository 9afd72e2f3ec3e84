from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gazerm.errors import ConfigError, PathNotFoundError
from gazerm.features.base import FEATURE_NAMES, word_spans
from gazerm.features.fmv1 import Fmv1GazePredictor
from tests.features.conftest import FMV1_BIAS

TRT = FEATURE_NAMES.index("TRT")
# "qvj" and "(bake)." split into several T5-style pieces, some of them a lone "▁" before the word.
TEXT = "Knead the qvj, then (bake).\n\nReading  times grow."
TEXTS = [TEXT, "", "Yes.", " ".join(["Reading times grow with word length."] * 6)]


def _raw_and_firsts(predictor: Fmv1GazePredictor, text: str) -> tuple[np.ndarray, list[int]]:
    """The model's raw output per token of the whole text, and the first token overlapping each word."""
    joined = " ".join(text.split())
    encoded = predictor.tokenizer(joined, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    firsts = [
        next(t for t, (a, b) in enumerate(offsets) if a < end and b > start and b > a)
        for start, end in word_spans(joined)
    ]
    ids = torch.tensor([encoded["input_ids"]])
    with torch.no_grad():
        raw = predictor.model(ids, torch.tensor([ids.shape[1]]))[0].numpy()
    return raw, firsts


def test_only_trt_is_filled_from_each_words_first_sub_token(fmv1_random: Path, t5_base: Path) -> None:
    predictor = Fmv1GazePredictor(fmv1_random, t5_base)
    result = predictor.predict([TEXT])[0]
    assert result.spans == word_spans(TEXT)
    others = [i for i in range(5) if i != TRT]
    assert not result.features[:, others].any()
    raw, firsts = _raw_and_firsts(predictor, TEXT)
    assert len(raw) - 1 > len(firsts)  # some words have several pieces, so "first" matters
    ids = predictor.tokenizer(" ".join(TEXT.split()))["input_ids"]
    pieces = predictor.tokenizer.convert_ids_to_tokens(ids)
    assert pieces[firsts[2] - 1] == "▁"  # "qvj," has a lone "▁" (the space before it) that is not its first
    np.testing.assert_allclose(result.features[:, TRT], np.clip(raw[firsts] / 11, 0, None), rtol=1e-5)
    assert (result.features[:, TRT] > 0).all()  # the comparison is not all clipped zeros
    assert predictor.name == f"fmv1:{fmv1_random.name}"


def test_trt_bins_are_divided_onto_the_common_scale(fmv1_constant: Path, t5_base: Path) -> None:
    default = Fmv1GazePredictor(fmv1_constant, t5_base).predict(TEXTS)
    for result in default:
        np.testing.assert_allclose(result.features[:, TRT], FMV1_BIAS / 11, rtol=1e-6)  # bins 0-11 → 0-1
    raw = Fmv1GazePredictor(fmv1_constant, t5_base, output_scale=1.0).predict(["Bake."])[0]
    np.testing.assert_allclose(raw.features, [[0, 0, 0, FMV1_BIAS, 0]], rtol=1e-6)
    with pytest.raises(ConfigError, match="fmv1 predicts TRT only: output_scale is one number"):
        Fmv1GazePredictor(fmv1_constant, t5_base, output_scale=[1, 1, 1, 1, 1])


def test_padding_never_reaches_the_lstm(fmv1_random: Path, t5_base: Path) -> None:
    """Texts of different lengths batched together give what each gives alone (packed sequences)."""
    predictor = Fmv1GazePredictor(fmv1_random, t5_base, batch_size=3)
    together = predictor.predict(TEXTS)
    for text, result in zip(TEXTS, together, strict=True):
        np.testing.assert_allclose(result.features, predictor.predict([text])[0].features, atol=1e-6)
    assert together[1].features.shape == (0, 5)


def test_the_state_dict_round_trips_strictly(fmv1_random: Path, t5_base: Path, tmp_path: Path) -> None:
    saved = torch.load(fmv1_random, weights_only=True)
    assert {"emb.weight", "lstm.weight_ih_l1_reverse", "head.0.weight", "head.2.bias"} <= saved.keys()
    loaded = Fmv1GazePredictor(fmv1_random, t5_base).model.state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[key], saved[key]) for key in saved)

    saved["head.1.weight"] = saved.pop("head.2.weight")
    renamed = tmp_path / "renamed"
    torch.save(saved, renamed)
    expected = r"renamed does not fit .*missing: head\.2\.weight; unexpected: head\.1\.weight"
    with pytest.raises(ConfigError, match=expected):
        Fmv1GazePredictor(renamed, t5_base)


def test_a_tokenizer_bigger_than_the_embedding_is_refused(t5_base: Path, tmp_path: Path) -> None:
    from tests.features.tiny_eyetrackpy import save_fmv1_checkpoint

    small = save_fmv1_checkpoint(tmp_path / "small", vocab_size=20)
    with pytest.raises(ConfigError, match="needs the t5-small tokenizer"):
        Fmv1GazePredictor(small, t5_base)


def test_missing_files_are_clear_errors(fmv1_random: Path, t5_base: Path, tmp_path: Path) -> None:
    with pytest.raises(PathNotFoundError, match="fmv1 checkpoint file not found"):
        Fmv1GazePredictor(tmp_path / "T5-tokenizer-BiLSTM-TRT-12-concat-3", t5_base)
    with pytest.raises(PathNotFoundError, match=r"fmv1 base .* directory not found: .*t5-small"):
        Fmv1GazePredictor(fmv1_random, tmp_path / "t5-small")
    with pytest.raises(PathNotFoundError, match="fmv1 checkpoint file not found"):
        Fmv1GazePredictor(t5_base, t5_base)  # a directory is not the checkpoint file
