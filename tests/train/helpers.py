"""Builders shared by the training tests: a loss kind bound to its outputs and a collator over the tiny
backbone's tokenizer, built the way a job builds them (``LossSpec``, ``InputPipeline``)."""

from __future__ import annotations

from typing import Any

from gazerm.model.config import ModelConfig
from gazerm.model.inputs import InputSpec
from gazerm.model.pipeline import InputPipeline
from gazerm.train.collate import UnitCollator, Windows
from gazerm.train.kinds import LossSpec, loss_kind


def loss_spec(kind: str = "pairwise", num_outputs: int = 1) -> LossSpec:
    return LossSpec(loss_kind(kind), num_outputs)


def make_collator(
    tokenizer: Any,
    max_length: int,
    micro_batch_size: int,
    kind: str = "pairwise",
    prompt_gaze: bool = False,
    bucket_window: int = 1,
    **model_fields: Any,
) -> UnitCollator:
    """A collator whose model gazes the prompt (the reference layout) when ``prompt_gaze``; ``model_fields``
    set other fields of its model's config."""
    model = ModelConfig(gaze_layout="reference" if prompt_gaze else "gazerm", **model_fields)
    inputs = InputPipeline.from_spec(InputSpec({"predictor": "reading_model"}, max_length), tokenizer, model)
    return UnitCollator(inputs, loss_spec(kind), Windows(micro_batch_size, bucket_window))
