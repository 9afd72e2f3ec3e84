"""Tiny batches and configs shared by the model tests."""

from __future__ import annotations

import pytest
import torch

from gazerm.model.config import LoraSettings, ModelConfig
from gazerm.model.reward_model import build_tokenizer

TEXTS = [
    "Human: How do I bake bread at home? Assistant: Mix flour, water, yeast and salt.",
    "Human: hi? Assistant: The quick brown fox.",
]
RESPONSE_START = 4  # tokens before this index have no gaze, like a prompt


def tiny_config(backbone: str = "tiny-llama", **overrides) -> ModelConfig:
    """A tiny config; BERT names its attention projections query/key/value, not q_proj/…"""
    if backbone == "tiny-bert":
        overrides.setdefault("lora", LoraSettings(target_modules=["query", "key", "value"]))
    return ModelConfig(backbone=backbone, **overrides)


@pytest.fixture(scope="session")
def tokenizers() -> dict:
    return {name: build_tokenizer(tiny_config(name)) for name in ("tiny-llama", "tiny-bert")}


def tokenizer_for(tokenizers: dict, backbone: str):
    return tokenizers["tiny-bert" if backbone == "tiny-bert" else "tiny-llama"]


def make_batch(tokenizer, texts: list[str] = TEXTS, seed: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded ids plus random gaze on every non-prompt token."""
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    generator = torch.Generator().manual_seed(seed)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    gaze = torch.rand(*ids.shape, 5, generator=generator)
    gaze_mask = mask.bool() & (torch.arange(ids.shape[1]) >= RESPONSE_START)
    return {"input_ids": ids, "attention_mask": mask, "gaze": gaze, "gaze_mask": gaze_mask}


def to_left_padding(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same batch, each row rolled so its padding comes first."""
    shifts = (batch["attention_mask"] == 0).sum(1).tolist()
    return {
        key: torch.stack([row.roll(s, 0) for row, s in zip(value, shifts, strict=True)])
        for key, value in batch.items()
    }
