"""``fmv2``: the paper's five-measure eye-tracking predictor (eyetrackpy's ``fixations_predictor_trained_2``).

What eyetrackpy publishes (``model.pth``) is the state dict of a RoBERTa-base encoder under
``roberta.`` (pooler included, as ``RobertaModel`` builds it) and a linear regression head
``decoder.0`` (hidden → 5: nFix, FFD, GPT, TRT, fixProp), trained as TorontoCL's CMCL-2021 system
(Li & Rudzicz 2021: Provo first, then the shared task's ZuCo data). :class:`RobertaGazeRegressor`
has exactly that layout, so the file loads with ``strict=True``. The encoder's config and the
tokenizer come from a local ``roberta-base`` directory (``base``), downloaded beforehand.

Words: the label of a training word sat on its first sub-token (the others were masked out of the
loss), so a word's five values are the head's outputs at its first sub-token. The model reads the
words joined by single spaces after a leading space, so every word, the first included, starts with
RoBERTa's space marker as in training (eyetrackpy passes ``add_prefix_space=True``).

Long texts: a sequence longer than ``window`` tokens (512, RoBERTa's limit) is cut into windows of
``window`` tokens where each window repeats the last ``overlap`` (50) tokens of the previous one;
each window is encoded on its own and, over an overlap, the outputs are blended linearly from the
earlier window's to the later one's (token ``j`` of the overlap gets weight ``(j+1)/(overlap+1)`` on
the later window), as eyetrackpy does. Windows carry no extra ``<s>``/``</s>``.

Scale: the training targets were the CMCL-2021 features, which the shared task published already
scaled to 0–100 (fixProp is the percentage of readers; the others are divided by constants that
neither eyetrackpy nor the training code gives, so milliseconds cannot be recovered).
``output_scale`` divides the outputs; its default 100 maps that range onto [0, 1], gazerm's common
scale (``gazerm.features.base``), and makes fixProp exactly a proportion. Negative outputs are
clipped to 0 (no reading measure is negative); eyetrackpy passes them on unclipped, as
``clip_negative=False`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, PretrainedConfig, RobertaModel

from gazerm.errors import ConfigError
from gazerm.features.alignment import first_tokens, offsets_tokenizer, word_values
from gazerm.features.base import N_FEATURES, WordGaze
from gazerm.features.fmv_common import (
    existing,
    floored,
    joined_words,
    load_strict,
    output_divisors,
    read_state_dict,
)

# Default divisor: the CMCL-2021 targets lie in 0–100.
CMCL_SCALE = 100.0
# A buffer older transformers saved with the weights; it holds no learnt values (0, 1, 2, ...).
LEGACY_BUFFERS = ("roberta.embeddings.position_ids",)


class RobertaGazeRegressor(nn.Module):
    """eyetrackpy's fmv2 layout: ``roberta`` (encoder + pooler) and ``decoder`` (Linear(hidden, 5))."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        self.roberta = RobertaModel(config)  # with its pooler: the published state dict has one
        self.decoder = nn.Sequential(nn.Linear(config.hidden_size, N_FEATURES))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids and mask → (B, T, 5) raw outputs (CMCL-2021 units)."""
        hidden = self.roberta(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.decoder(hidden)


class Fmv2GazePredictor:
    """Per-word nFix, FFD, GPT, TRT and fixProp from eyetrackpy's fmv2 (see module doc)."""

    def __init__(
        self,
        checkpoint: str | Path,
        base: str | Path,
        output_scale: float | Sequence[float] | None = None,
        clip_negative: bool = True,
        window: int = 512,
        overlap: int = 50,
        batch_size: int = 16,
        device: str | None = None,
    ) -> None:
        checkpoint = existing(checkpoint, "fmv2 checkpoint", directory=False)
        base = existing(base, "fmv2 base (local roberta-base: config + tokenizer)", directory=True)
        self.name = f"fmv2:{checkpoint.name}"
        config = AutoConfig.from_pretrained(base)
        if config.model_type != "roberta":
            raise ConfigError(f"{base}: fmv2 needs a RoBERTa config, got model_type={config.model_type!r}")
        positions = config.max_position_embeddings - config.pad_token_id - 1
        if not 0 <= overlap < window <= positions:
            raise ConfigError(f"fmv2 needs 0 <= overlap < window <= {positions}; got {overlap=}, {window=}")
        self.tokenizer = offsets_tokenizer(base)
        self.model = RobertaGazeRegressor(config)
        state = read_state_dict(checkpoint)
        for key in LEGACY_BUFFERS:
            state.pop(key, None)
        load_strict(self.model, state, checkpoint)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.output_scale = output_divisors(output_scale, CMCL_SCALE)
        self.clip_negative = clip_negative
        self.window, self.overlap, self.batch_size = window, overlap, batch_size
        self.pad_id = config.pad_token_id  # RoBERTa numbers positions from the tokens that are not this

    def predict(self, texts: list[str]) -> list[WordGaze]:
        words = [joined_words(text, prefix=" ") for text in texts]
        results = [WordGaze(spans, np.zeros((len(spans), N_FEATURES), np.float32)) for spans, _, _ in words]
        todo = [i for i, (spans, _, _) in enumerate(words) if spans]
        if not todo:
            return results
        encoded = self.tokenizer(
            [words[i][1] for i in todo], return_offsets_mapping=True, truncation=False, verbose=False
        )
        outputs = self.token_outputs([np.asarray(ids) for ids in encoded["input_ids"]])
        for i, offsets, values in zip(todo, encoded["offset_mapping"], outputs, strict=True):
            first = first_tokens(offsets, words[i][2])
            scaled = word_values(values, first) / self.output_scale
            results[i].features[:] = floored(scaled, self.clip_negative)
        return results

    def token_outputs(self, sequences: list[np.ndarray]) -> list[np.ndarray]:
        """Per token-id sequence, its (T, 5) raw outputs, long ones through overlapping windows."""
        spans = [window_spans(len(ids), self.window, self.overlap) for ids in sequences]
        windows = [(s, start, end) for s, text_spans in enumerate(spans) for start, end in text_spans]
        order = sorted(range(len(windows)), key=lambda w: windows[w][2] - windows[w][1])  # less padding
        window_out: list[np.ndarray | None] = [None] * len(windows)
        for begin in range(0, len(order), self.batch_size):
            batch = order[begin : begin + self.batch_size]
            chunks = [sequences[windows[w][0]][windows[w][1] : windows[w][2]] for w in batch]
            for w, out in zip(batch, self._forward(chunks), strict=True):
                window_out[w] = out
        per_sequence: list[list[np.ndarray]] = [[] for _ in sequences]
        for (s, _, _), out in zip(windows, window_out, strict=True):
            per_sequence[s].append(out)
        return [blend_windows(outs, self.overlap) for outs in per_sequence]

    @torch.inference_mode()
    def _forward(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        longest = max(len(chunk) for chunk in chunks)
        ids = torch.full((len(chunks), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunks), longest), dtype=torch.long)
        for row, chunk in enumerate(chunks):
            ids[row, : len(chunk)] = torch.as_tensor(chunk)
            mask[row, : len(chunk)] = 1
        out = self.model(ids.to(self.device), mask.to(self.device)).float().cpu().numpy()
        return [out[row, : len(chunk)] for row, chunk in enumerate(chunks)]


def window_spans(length: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Token ``[start, end)`` of each window: ``window`` long, each starting ``overlap`` tokens before
    the previous one ends; one span when the sequence fits."""
    spans, start = [], 0
    while True:
        end = min(start + window, length)
        spans.append((start, end))
        if end == length:
            return spans
        start = end - overlap


def blend_windows(outputs: list[np.ndarray], overlap: int) -> np.ndarray:
    """Consecutive windows' (T_k, 5) outputs → one (T, 5) sequence; each overlap is blended linearly."""
    combined = outputs[0]
    weight = (np.arange(1, overlap + 1, dtype=np.float32) / (overlap + 1))[:, None]  # on the later window
    for out in outputs[1:]:
        if overlap:
            blended = (1 - weight) * combined[-overlap:] + weight * out[:overlap]
            combined = np.concatenate([combined[:-overlap], blended])
        combined = np.concatenate([combined, out[overlap:]])
    return combined
