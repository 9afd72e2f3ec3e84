"""``fmv1``: the paper's TRT-only eye-tracking predictor (eyetrackpy's ``fixations_predictor_trained_1``).

The checkpoint eyetrackpy loads (``T5-tokenizer-BiLSTM-TRT-12-concat-3``) is Huang & Hollenstein's
(2023) total-reading-time predictor: T5's token embedding (32128 × 512, frozen), a 2-layer
bidirectional LSTM (hidden 128, ``batch_first``) and a head Linear(256, 128) → ReLU → Linear(128, 1),
one value per T5 token. Its state dict keys are ``emb.weight``, ``lstm.*`` and ``head.0``/``head.2``;
:class:`BiLSTMTokenRegressor` has that layout (sizes read from the file), so it loads with
``strict=True``. The tokenizer is t5-small's, from a local directory (``base``).

It predicts TRT only: the TRT column is filled and nFix, FFD, GPT and fixProp stay 0, so a reward
model trained on fmv1 features must use TRT alone (``model.features_used: [0, 0, 0, 1, 0]``, checked
where the training job is configured).

Words: in training every token of a word carried the word's label (the tokens that cover only the
space before it or only its last character carried a default of 1), so the first sub-token that
overlaps the word is a labelled one; a word's TRT is the output there. The model reads the words
joined by single spaces with T5's ``</s>`` appended, as in training and in eyetrackpy. A BiLSTM has
no length limit, so long texts are read whole, as eyetrackpy does; padding in a batch is packed
away, so a text's values never depend on what it was batched with (eyetrackpy pads, which shifts the
backward LSTM's values for shorter rows; the paper's reward code predicts one text at a time).

Scale: the training targets were not milliseconds but the bin (0, 1, …, 11) of a word's TRT among 12
quantiles of TRT averaged over readers (after dividing by each corpus's mean). ``output_scale``
divides the outputs; its default 11 maps the bins onto [0, 1], a TRT percentile rather than ms/800.
Negative outputs are clipped to 0; eyetrackpy passes the raw regression output on, as
``clip_negative=False`` does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from gazerm.errors import ConfigError
from gazerm.features.alignment import first_tokens, offsets_tokenizer, word_values
from gazerm.features.base import FEATURE_NAMES, N_FEATURES, WordGaze
from gazerm.features.fmv_common import (
    existing,
    floored,
    joined_words,
    load_strict,
    output_divisors,
    read_state_dict,
)

TRT = FEATURE_NAMES.index("TRT")
# Default divisor: the targets were 12 quantile bins, 0 to 11.
TRT_BINS_SCALE = 11.0
# Sizes of the published checkpoint, used when the file lacks the tensors to read them from.
PUBLISHED_SIZES = {"vocab_size": 32128, "embedding_dim": 512, "hidden_size": 128}


class BiLSTMTokenRegressor(nn.Module):
    """eyetrackpy's fmv1 layout: ``emb`` → 2-layer BiLSTM ``lstm`` → ``head`` (Linear, ReLU, Linear)."""

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Sequential(
            nn.Linear(2 * hidden_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, 1)
        )

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T) right-padded token ids and (B,) lengths → (B, T) raw outputs (0 past each length)."""
        packed = pack_padded_sequence(
            self.emb(input_ids), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        hidden, _ = pad_packed_sequence(
            self.lstm(packed)[0], batch_first=True, total_length=input_ids.shape[1]
        )
        return self.head(hidden).squeeze(-1)


def sizes_of(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Vocabulary, embedding and LSTM sizes as the state dict's tensors give them."""
    sizes = dict(PUBLISHED_SIZES)
    if "emb.weight" in state and state["emb.weight"].ndim == 2:
        sizes["vocab_size"], sizes["embedding_dim"] = state["emb.weight"].shape
    if "lstm.weight_hh_l0" in state and state["lstm.weight_hh_l0"].ndim == 2:
        sizes["hidden_size"] = state["lstm.weight_hh_l0"].shape[1]
    return sizes


class Fmv1GazePredictor:
    """Per-word TRT from eyetrackpy's fmv1; the other four features are 0 (see module doc)."""

    def __init__(
        self,
        checkpoint: str | Path,
        base: str | Path,
        output_scale: float | None = None,
        clip_negative: bool = True,
        batch_size: int = 32,
        device: str | None = None,
    ) -> None:
        checkpoint = existing(checkpoint, "fmv1 checkpoint", directory=False)
        base = existing(base, "fmv1 base (local t5-small tokenizer)", directory=True)
        if output_scale is not None and np.ndim(output_scale) != 0:
            raise ConfigError(f"fmv1 predicts TRT only: output_scale is one number, got {output_scale!r}")
        self.name = f"fmv1:{checkpoint.name}"
        self.tokenizer = offsets_tokenizer(base)
        state = read_state_dict(checkpoint)
        self.model = BiLSTMTokenRegressor(**sizes_of(state))
        load_strict(self.model, state, checkpoint)
        if len(self.tokenizer) > self.model.emb.num_embeddings:
            raise ConfigError(
                f"{base}: the tokenizer has {len(self.tokenizer)} tokens but {checkpoint} embeds "
                f"{self.model.emb.num_embeddings}; fmv1 needs the t5-small tokenizer"
            )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.output_scale = float(output_divisors(output_scale, TRT_BINS_SCALE)[TRT])
        self.clip_negative = clip_negative
        self.batch_size = batch_size

    def predict(self, texts: list[str]) -> list[WordGaze]:
        words = [joined_words(text) for text in texts]
        results = [WordGaze(spans, np.zeros((len(spans), N_FEATURES), np.float32)) for spans, _, _ in words]
        todo = [i for i, (spans, _, _) in enumerate(words) if spans]
        for begin in range(0, len(todo), self.batch_size):
            batch = todo[begin : begin + self.batch_size]
            encoded = self.tokenizer(
                [words[i][1] for i in batch], return_offsets_mapping=True, truncation=False, verbose=False
            )
            outputs = self._forward(encoded["input_ids"])
            for i, offsets, values in zip(batch, encoded["offset_mapping"], outputs, strict=True):
                trt = word_values(values, first_tokens(offsets, words[i][2]))
                results[i].features[:, TRT] = floored(trt / self.output_scale, self.clip_negative)
        return results

    @torch.inference_mode()
    def _forward(self, sequences: list[list[int]]) -> list[np.ndarray]:
        """Per token-id sequence, its (T,) raw outputs."""
        lengths = torch.tensor([len(ids) for ids in sequences])
        ids = torch.zeros((len(sequences), int(lengths.max())), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            ids[row, : len(sequence)] = torch.as_tensor(sequence)
        out = self.model(ids.to(self.device), lengths).float().cpu().numpy()
        return [out[row, :length] for row, length in enumerate(lengths.tolist())]
