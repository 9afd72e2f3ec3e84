from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gazerm.features.base import FEATURE_SCALES, word_spans
from gazerm.features.transformer import TransformerGazePredictor
from tests.features.conftest import CONSTANT_BIAS

# "qvj" splits into letters in any build of the local tokenizer (see test_alignment).
TEXTS = ["Knead the qvj, then bake.", "", "Reading times grow with word length and shrink with frequency."]


def test_constant_model_gives_its_bias_for_every_word(constant_checkpoint: Path) -> None:
    predictor = TransformerGazePredictor(constant_checkpoint, words_per_chunk=3)  # several chunks per text
    results = predictor.predict(TEXTS)
    expected = np.clip(np.array(CONSTANT_BIAS, dtype=np.float32) / FEATURE_SCALES, 0, None)
    np.testing.assert_allclose(expected, [0.5, 0.5, 0.4, 0.375, 0.0])
    for text, result in zip(TEXTS, results, strict=True):
        assert result.spans == word_spans(text)
        assert result.features.shape == (len(result.spans), 5)
        np.testing.assert_allclose(result.features, np.tile(expected, (len(result.spans), 1)), rtol=1e-6)
    assert predictor.name == f"transformer:{constant_checkpoint.name}"


def test_explicit_output_scale_overrides_the_checkpoint(constant_checkpoint: Path) -> None:
    result = TransformerGazePredictor(constant_checkpoint, output_scale=100.0).predict(["Bake bread."])[0]
    np.testing.assert_allclose(result.features, [[0.02, 2.0, 4.0, 3.0, 0.0]] * 2, rtol=1e-6)


def test_words_pool_the_first_sub_token(random_checkpoint: Path) -> None:
    predictor = TransformerGazePredictor(random_checkpoint)
    text = "Knead qvj, then bake."
    encoded = predictor.tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        logits = predictor.model(**encoded).logits[0].clamp(min=0).numpy()
    # tokens: [CLS] knead q ##v ##j , then bake . [SEP]; each word takes its first token's output
    np.testing.assert_allclose(
        predictor.predict([text])[0].features, logits[[1, 2, 6, 7]], rtol=1e-5, atol=1e-6
    )


def test_random_model_is_deterministic_and_batch_independent(random_checkpoint: Path) -> None:
    predictor = TransformerGazePredictor(random_checkpoint, batch_size=2)
    together = predictor.predict(TEXTS)
    alone = [predictor.predict([text])[0] for text in TEXTS]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a.features, b.features, rtol=1e-5, atol=1e-6)
    assert [len(r.spans) for r in together] == [5, 0, 10]
    assert (together[0].features >= 0).all() and together[0].features.any()


def test_words_past_max_length_get_zeros(constant_checkpoint: Path) -> None:
    # 6 tokens: [CLS] knead the q ##v [SEP]; "qvj," starts inside the limit, "then" does not.
    features = TransformerGazePredictor(constant_checkpoint, max_length=6).predict([TEXTS[0]])[0].features
    assert features[:3].any(axis=1).all()
    assert not features[3:].any()


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint directory not found"):
        TransformerGazePredictor(tmp_path / "nope")
