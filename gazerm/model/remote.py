"""A gaze reward model as a transformers model, for checkpoints written by ``gazerm export``.

A model that fuses gaze (or pools, heads or scores otherwise than a transformers
``*ForSequenceClassification``) cannot become a standard checkpoint. ``export`` saves it with these two
classes instead; ``save_pretrained`` copies this file beside the weights and points ``auto_map`` at it,
so ``AutoModelForSequenceClassification.from_pretrained(dir, trust_remote_code=True)`` builds it. The
file imports gazerm: the gaze features it reads come from gazerm's predictors anyway.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from gazerm.model.config import ModelConfig
from gazerm.model.projector import GazeProjector, used_columns
from gazerm.model.reward_model import RewardModel


class GazeRewardConfig(PretrainedConfig):
    """``backbone``: the merged backbone's own config (a dict with its ``model_type``); ``reward``: the
    gazerm ``ModelConfig`` (fusion, projector, pooling, heads); ``inputs``: the ``InputSpec`` (gaze
    predictor, max_length, prompt template) that says how inputs were built in training."""

    model_type = "gazerm_reward"

    def __init__(
        self,
        backbone: dict[str, Any] | None = None,
        reward: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.backbone = backbone or {}
        self.reward = reward or {}
        self.inputs = inputs or {}
        super().__init__(**kwargs)


class GazeRewardModel(PreTrainedModel):
    """gazerm's ``RewardModel`` around a merged (LoRA-free) backbone; ``logits`` are the rewards
    ``(B, num_outputs)``. Takes the inputs ``gazerm.model.inputs.SequenceEncoder`` builds."""

    config_class = GazeRewardConfig
    base_model_prefix = "reward"

    def __init__(self, config: GazeRewardConfig) -> None:
        super().__init__(config)
        backbone_config = dict(config.backbone)
        backbone = AutoModel.from_config(
            AutoConfig.for_model(backbone_config.pop("model_type"), **backbone_config)
        )
        self.reward = RewardModel(backbone, ModelConfig.model_validate(config.reward))
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Buffers no checkpoint holds: the backbone's (rotary frequencies) as transformers sets them, and
        the projector's feature columns, derived from the config."""
        super()._init_weights(module)
        if isinstance(module, GazeProjector):
            module.columns.copy_(used_columns(self.config.reward["features_used"]))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        gaze: torch.Tensor | None = None,
        gaze_mask: torch.Tensor | None = None,
        implicit: torch.Tensor | None = None,
        implicit_mask: torch.Tensor | None = None,
        **_: Any,
    ) -> SequenceClassifierOutput:
        rewards = self.reward(
            input_ids,
            attention_mask,
            gaze=gaze,
            gaze_mask=gaze_mask,
            implicit=implicit,
            implicit_mask=implicit_mask,
        ).rewards
        return SequenceClassifierOutput(logits=rewards.reshape(rewards.shape[0], -1))
