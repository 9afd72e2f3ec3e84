from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gazerm.errors import ConfigError, PathNotFoundError
from gazerm.features.base import word_spans
from gazerm.features.fmv2 import Fmv2GazePredictor, blend_windows, window_spans
from tests.features.conftest import FMV2_BIAS

# "qvj" splits into letters in any build of the tiny tokenizer; "\n\n" and the double space are not
# seen by the model (it reads the words joined by single spaces).
TEXT = "Knead the qvj, then bake.\n\nReading  times grow."
LONG = " ".join(
    ["Reading times grow with word length and shrink with word frequency."] * 3
    + ["The quick brown fox jumps over the lazy dog."] * 3
)


def _tokens(predictor: Fmv2GazePredictor, text: str) -> tuple[list[int], list[tuple[int, int]], str]:
    joined = " " + " ".join(text.split())
    encoded = predictor.tokenizer(joined, return_offsets_mapping=True)
    return encoded["input_ids"], encoded["offset_mapping"], joined


def _first_token_per_word(offsets: list[tuple[int, int]], joined: str) -> list[int]:
    """The first token whose characters overlap each word of ``joined`` (written out plainly)."""
    firsts = []
    for start, end in word_spans(joined):
        firsts.append(next(t for t, (a, b) in enumerate(offsets) if a < end and b > start and b > a))
    return firsts


def _forward(predictor: Fmv2GazePredictor, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        ids_tensor = torch.tensor([ids])
        return predictor.model(ids_tensor, torch.ones_like(ids_tensor))[0].numpy()


def test_a_word_takes_the_outputs_at_its_first_sub_token(fmv2_random: Path, roberta_base: Path) -> None:
    predictor = Fmv2GazePredictor(fmv2_random, roberta_base, output_scale=1.0)
    ids, offsets, joined = _tokens(predictor, TEXT)
    firsts = _first_token_per_word(offsets, joined)
    assert len(ids) - 2 > len(firsts)  # some words have several sub-tokens, so "first" matters
    result = predictor.predict([TEXT])[0]
    assert result.spans == word_spans(TEXT)
    expected = np.clip(_forward(predictor, ids)[firsts], 0, None)
    np.testing.assert_allclose(result.features, expected, rtol=1e-5, atol=1e-6)
    assert (result.features > 0).mean() > 0.5  # the comparison is not all clipped zeros


def test_long_texts_go_through_overlapping_windows(
    fmv2_random: Path, fmv2_constant: Path, roberta_base: Path
) -> None:
    window, overlap = 16, 4
    small = Fmv2GazePredictor(fmv2_random, roberta_base, output_scale=1.0, window=window, overlap=overlap)
    ids, offsets, joined = _tokens(small, LONG)
    firsts = np.array(_first_token_per_word(offsets, joined))
    spans = window_spans(len(ids), window, overlap)
    assert len(spans) >= 4
    features = small.predict([LONG])[0].features

    # A word outside the overlaps has what its window alone gives it (no <s>/</s> added to a window).
    outside_overlaps = np.zeros(len(firsts), bool)
    for k, (start, end) in enumerate(spans):
        alone = np.clip(_forward(small, ids[start:end]), 0, None)
        inner_start = start + (overlap if k else 0)
        inner_end = end - (overlap if k < len(spans) - 1 else 0)
        inner = (firsts >= inner_start) & (firsts < inner_end)
        np.testing.assert_allclose(features[inner], alone[firsts[inner] - start], rtol=1e-5, atol=1e-6)
        outside_overlaps |= inner
    assert 0 < outside_overlaps.sum() < len(firsts)  # some words lie in overlaps (blended)
    # The whole text in one pass (the default 512-token window) sees more context: other values.
    whole = Fmv2GazePredictor(fmv2_random, roberta_base, output_scale=1.0).predict([LONG])[0].features
    assert not np.allclose(whole, features, atol=1e-3)

    # Every word gets a value, the ones in overlaps too.
    constant = Fmv2GazePredictor(fmv2_constant, roberta_base, window=window, overlap=overlap)
    every_word = constant.predict([LONG])[0].features
    np.testing.assert_allclose(every_word, [[0.02, 0.2, 0.4, 0.3, 0.0]] * len(firsts), rtol=1e-6)


def test_windows_and_their_linear_blend_follow_eyetrackpy() -> None:
    assert window_spans(1000, 512, 50) == [(0, 512), (462, 974), (924, 1000)]
    assert window_spans(512, 512, 50) == [(0, 512)]  # a sequence that fits is one window
    assert window_spans(10, 6, 0) == [(0, 6), (6, 10)]
    earlier, later = np.zeros((6, 5)), np.ones((6, 5))
    blended = blend_windows([earlier, later], overlap=2)
    np.testing.assert_allclose(blended[:, 0], [0, 0, 0, 0, 1 / 3, 2 / 3, 1, 1, 1, 1])
    np.testing.assert_allclose(blend_windows([earlier, later], overlap=0)[:, 0], [0] * 6 + [1] * 6)


def test_predictions_do_not_depend_on_the_batch(fmv2_random: Path, roberta_base: Path) -> None:
    predictor = Fmv2GazePredictor(fmv2_random, roberta_base, window=16, overlap=4, batch_size=3)
    texts = [TEXT, "", LONG, "Yes."]
    together = predictor.predict(texts)
    for text, result in zip(texts, together, strict=True):
        np.testing.assert_allclose(result.features, predictor.predict([text])[0].features, atol=1e-5)
    assert together[1].features.shape == (0, 5)


def test_outputs_are_divided_onto_the_common_scale(fmv2_constant: Path, roberta_base: Path) -> None:
    default = Fmv2GazePredictor(fmv2_constant, roberta_base).predict(["Bake bread."])[0].features
    np.testing.assert_allclose(default, [[0.02, 0.2, 0.4, 0.3, 0.0]] * 2, rtol=1e-6)  # CMCL 0-100 → 0-1
    assert FMV2_BIAS[-1] < 0  # a negative fixProp is clipped to 0
    custom = Fmv2GazePredictor(fmv2_constant, roberta_base, output_scale=[1, 10, 10, 10, 100])
    np.testing.assert_allclose(custom.predict(["Bake."])[0].features, [[2.0, 2.0, 4.0, 3.0, 0.0]], rtol=1e-6)
    for bad in (0.0, [1.0, 2.0]):
        with pytest.raises(ConfigError, match="output_scale"):
            Fmv2GazePredictor(fmv2_constant, roberta_base, output_scale=bad)


def test_raw_outputs_pass_negatives_on_as_the_reference_reads_them(fmv2_constant: Path, roberta_base: Path):
    """``output_scale: 1`` and ``clip_negative: false``: the raw outputs eyetrackpy gives the reference."""
    raw = Fmv2GazePredictor(fmv2_constant, roberta_base, output_scale=1.0, clip_negative=False)
    np.testing.assert_allclose(raw.predict(["Bake."])[0].features, [FMV2_BIAS], rtol=1e-6)
    assert FMV2_BIAS[-1] < 0  # kept negative


def test_the_state_dict_round_trips_strictly(fmv2_random: Path, roberta_base: Path, tmp_path: Path) -> None:
    saved = torch.load(fmv2_random, weights_only=True)
    assert "decoder.0.weight" in saved and "roberta.pooler.dense.weight" in saved  # eyetrackpy's names
    loaded = Fmv2GazePredictor(fmv2_random, roberta_base).model.state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[key], saved[key]) for key in saved)
    # Older transformers saved the position-id buffer with the weights: accepted.
    legacy = tmp_path / "legacy.pth"
    torch.save({**saved, "roberta.embeddings.position_ids": torch.arange(514)[None]}, legacy)
    Fmv2GazePredictor(legacy, roberta_base)


def test_a_checkpoint_of_another_layout_is_a_clear_error(
    fmv2_random: Path, roberta_base: Path, tmp_path: Path
) -> None:
    state = torch.load(fmv2_random, weights_only=True)
    state["linear.weight"] = state.pop("decoder.0.weight")  # TorontoCL's own name for the head
    renamed = tmp_path / "renamed.pth"
    torch.save(state, renamed)
    expected = r"renamed\.pth .*missing: decoder\.0\.weight; unexpected: linear\.weight"
    with pytest.raises(ConfigError, match=expected):
        Fmv2GazePredictor(renamed, roberta_base)
    garbage = tmp_path / "notes.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match=r"notes\.pth: not a PyTorch state dict"):
        Fmv2GazePredictor(garbage, roberta_base)


def test_missing_files_and_impossible_windows_are_clear_errors(
    fmv2_random: Path, roberta_base: Path, tmp_path: Path
) -> None:
    with pytest.raises(PathNotFoundError, match=r"fmv2 checkpoint file not found: .*model\.pth"):
        Fmv2GazePredictor(tmp_path / "model.pth", roberta_base)
    with pytest.raises(PathNotFoundError, match=r"fmv2 base .* directory not found: .*roberta-base"):
        Fmv2GazePredictor(fmv2_random, tmp_path / "roberta-base")
    with pytest.raises(ConfigError, match="window <= 512"):
        Fmv2GazePredictor(fmv2_random, roberta_base, window=600)
    with pytest.raises(ConfigError, match="overlap < window"):
        Fmv2GazePredictor(fmv2_random, roberta_base, window=16, overlap=16)
