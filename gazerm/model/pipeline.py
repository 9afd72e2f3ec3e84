"""The one way from a model's :class:`InputSpec` to its inputs.

Training (the collator), scoring (and so serving), export and the benchmarks all build their encoder
here, from the same spec, tokenizer and model config, so a model scores text exactly as training saw it
by construction: nothing else builds a :class:`SequenceEncoder` or picks its template.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gazerm.model.config import ModelConfig
from gazerm.model.inputs import InputSpec, ModelInputs, PromptResponse, SequenceEncoder
from gazerm.model.templates import build_template


@dataclass(frozen=True)
class InputPipeline:
    """A model's input spec and the encoder it gives: the template it names, its token budget, the
    prompt's gaze where the model's layout reads it (``ModelConfig.gazes_prompt``), and the truncation
    side and gaze spreading its config names."""

    spec: InputSpec
    encoder: SequenceEncoder

    @classmethod
    def from_spec(cls, spec: InputSpec, tokenizer: Any, model_config: ModelConfig) -> InputPipeline:
        template = build_template(spec.template, tokenizer)
        encoder = SequenceEncoder(
            tokenizer,
            spec.max_length,
            template,
            prompt_gaze=model_config.gazes_prompt,
            truncation_side=model_config.truncation_side,
            gaze_spread=model_config.gaze_spread,
        )
        return cls(spec, encoder)

    def inputs(self, sequences: list[PromptResponse]) -> ModelInputs:
        """``sequences`` encoded and right-padded into one batch."""
        return self.encoder.pad(self.encoder.encode(sequences))
