"""``pairwise``: Bradley-Terry over labelled (chosen, rejected) pairs, optionally with the pair's score
margin and a next-token loss on the chosen response.

A unit is one pair of an example: both texts with their gaze and implicit features, and the margin
(0 where the source has none). A micro-batch stacks all chosen sequences first and all rejected ones
after (``2B`` rows), so one forward pass scores both sides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from gazerm.model.config import LossConfig, ModelConfig
from gazerm.model.inputs import PromptGaze, SequenceEncoder
from gazerm.model.losses import lm_loss, pairwise_loss
from gazerm.train.batch import MicroBatch, UnitLabels
from gazerm.train.kinds.base import (
    Encoded,
    LossKind,
    Row,
    Window,
    encode_side,
    ordered_right,
    response_fields,
    response_inputs,
)

if TYPE_CHECKING:  # the model module pulls in transformers; kinds only pass its output along
    from gazerm.model.reward_model import RewardOutput

SIDES = ("chosen", "rejected")


class Pairwise(LossKind):
    name = "pairwise"
    metric_names: ClassVar[dict[str, str]] = {
        "accuracy": "correct",
        "loss": "loss",
        "reward_margin": "margin",
    }

    def label_columns(self, num_outputs: int) -> list[str]:
        return ["pairs"]

    def unit_fields(self) -> list[pa.Field]:
        return [*(f for side in SIDES for f in response_fields(f"{side}_")), pa.field("margin", pa.float32())]

    def units(self, row: Row, num_outputs: int) -> list[dict[str, Any]]:
        units = []
        for pair in row["pairs"] or []:
            unit = {"margin": pair["margin"] or 0.0}
            for side in SIDES:
                index = pair[side]
                unit[f"{side}_text"] = row["responses"][index]
                unit.update({f"{side}_{name}": value for name, value in response_inputs(row, index).items()})
            units.append(unit)
        return units

    def encode(
        self,
        encoder: SequenceEncoder,
        prefixes: list[str],
        window: Window,
        prompts: list[PromptGaze | None] | None = None,
    ) -> list[list[Encoded]]:
        sides = [encode_side(encoder, prefixes, window, f"{side}_", prompts) for side in SIDES]
        return [list(items) for items in zip(*sides, strict=True)]

    def micro_batch(
        self, encoder: SequenceEncoder, window: Window, units: list[list[Encoded]], rows: np.ndarray
    ) -> MicroBatch:
        inputs = encoder.pad([units[row][side] for side in range(len(SIDES)) for row in rows])
        margin = torch.tensor([window["margin"][row] for row in rows], dtype=torch.float32)
        return MicroBatch(inputs, UnitLabels([str(window["source"][row]) for row in rows], margin=margin))

    def forward_groups(self, model: ModelConfig) -> int:
        """2 with ``model.pair_forward: separate``: chosen rows, then rejected rows, each padded to its own
        longest (trl's RewardTrainer, which the reference trains with)."""
        return len(SIDES) if model.pair_forward == "separate" else 1

    def shares_prefix(self, model: ModelConfig) -> bool:
        """With ``model.pair_forward: shared``: each pair runs as one sequence, its prompt computed once."""
        return model.pair_forward == "shared"

    def loss(
        self, output: RewardOutput, micro: MicroBatch, config: LossConfig
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        half = micro.labels.num_units
        chosen, rejected = output.rewards[:half], output.rewards[half:]
        loss = pairwise_loss(chosen, rejected, micro.labels.margin if config.use_margin else None)
        details = {"train/accuracy": ordered_right(chosen - rejected).mean().detach()}
        if config.lm_loss_coeff > 0:
            inputs = micro.inputs
            language = lm_loss(output.lm_logits[:half], inputs.input_ids[:half], inputs.response_mask[:half])
            details["train/lm_loss"] = language.detach()
            loss = loss + config.lm_loss_coeff * language
        return loss, details

    def eval_totals(
        self, rewards: torch.Tensor, labels: UnitLabels, use_margin: bool, tie_credit: float = 0.5
    ) -> dict[str, torch.Tensor]:
        half = labels.num_units
        difference = rewards[:half] - rewards[half:]
        margin = labels.margin.float() if use_margin else torch.zeros_like(difference)
        return {
            "correct": ordered_right(difference, tie_credit),
            "loss": -F.logsigmoid(difference - margin),
            "margin": difference,
        }
