"""A trained eye-tracking predictor: a token-regression transformer loaded from a local directory.

The paper's predictors are RoBERTa models fine-tuned to regress the five measures per token
(CMCL-2021 shared task). Any ``AutoModelForTokenClassification`` with ``num_labels=5`` and a
fast tokenizer saved in one directory works. Words are pooled from their *first* sub-token,
which is how such models are trained (the label sits on a word's first token, the rest are
ignored in the loss), so the other sub-tokens' outputs carry no trained meaning.

Output scale: the model's outputs divided by ``output_scale`` must be on the common scale of
``gazerm.features.base``. It defaults to the checkpoint config's ``gaze_output_scale`` entry
(one number or five) and otherwise to 1, i.e. a model trained on the features this package
produces (``gazerm.features.recorded``). A CMCL-2021 model, trained on targets scaled to 0-100,
takes ``output_scale=100``. Negative outputs are clipped to 0: no reading measure is negative.

Long texts are cut into chunks of ``words_per_chunk`` words, each predicted as its own sequence,
since the models were trained on sentences and have a fixed maximum length; a word still past
``max_length`` tokens in its chunk gets zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForTokenClassification

from gazerm.errors import ConfigError, PathNotFoundError
from gazerm.features.alignment import first_tokens, offsets_tokenizer, word_values
from gazerm.features.base import N_FEATURES, WordGaze, word_spans


class TransformerGazePredictor:
    """Per-word gaze from a local token-regression checkpoint (see module doc for scale and pooling)."""

    def __init__(
        self,
        path: str | Path,
        output_scale: float | Sequence[float] | None = None,
        batch_size: int = 32,
        max_length: int = 512,
        words_per_chunk: int = 128,
        device: str | None = None,
    ) -> None:
        path = Path(path)
        if not path.is_dir():
            raise PathNotFoundError(f"gaze predictor checkpoint directory not found: {path}")
        self.name = f"transformer:{path.resolve().name}"
        self.tokenizer = offsets_tokenizer(path)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = AutoModelForTokenClassification.from_pretrained(path).to(self.device).eval()
        if self.model.config.num_labels != N_FEATURES:
            raise ConfigError(f"{path}: expected num_labels={N_FEATURES}, got {self.model.config.num_labels}")
        scale = (
            output_scale if output_scale is not None else getattr(self.model.config, "gaze_output_scale", 1.0)
        )
        self.output_scale = np.broadcast_to(np.asarray(scale, dtype=np.float32), (N_FEATURES,))
        self.batch_size, self.max_length, self.words_per_chunk = batch_size, max_length, words_per_chunk

    def predict(self, texts: list[str]) -> list[WordGaze]:
        spans = [word_spans(text) for text in texts]
        chunks = [
            (text_index, first)
            for text_index, text_spans in enumerate(spans)
            for first in range(0, len(text_spans), self.words_per_chunk)
        ]
        features = [np.zeros((len(s), N_FEATURES), np.float32) for s in spans]
        for begin in range(0, len(chunks), self.batch_size):
            batch = chunks[begin : begin + self.batch_size]
            chunk_spans = [spans[t][first : first + self.words_per_chunk] for t, first in batch]
            chunk_texts = [texts[t][s[0][0] : s[-1][1]] for (t, _), s in zip(batch, chunk_spans, strict=True)]
            outputs = self._forward(chunk_texts)
            for (t, first), s, (offsets, values) in zip(batch, chunk_spans, outputs, strict=True):
                chunk = np.asarray(s) - s[0][0]  # the chunk's words, in its own characters
                features[t][first : first + len(s)] = word_values(values, first_tokens(offsets, chunk))
        return [WordGaze(s, f) for s, f in zip(spans, features, strict=True)]

    @torch.inference_mode()
    def _forward(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per text: token offsets (T, 2) and normalised, non-negative outputs (T, 5)."""
        encoded = self.tokenizer(
            texts,
            return_offsets_mapping=True,
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )
        offsets = encoded.pop("offset_mapping").numpy()
        real = encoded["attention_mask"].numpy().astype(bool)
        logits = self.model(**encoded.to(self.device)).logits.float().cpu().numpy()
        values = np.clip(logits / self.output_scale, 0.0, None)
        return [(offsets[i][real[i]], values[i][real[i]]) for i in range(len(texts))]
