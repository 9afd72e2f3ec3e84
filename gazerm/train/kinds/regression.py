"""``regression``: mean squared error on ratings, one output per rated attribute.

A unit is one rated response with its targets: the scalar ``scores``, or the ``attribute_scores``
when the model has several outputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
import torch

from gazerm.data.errors import DataError
from gazerm.model.config import LossConfig
from gazerm.model.inputs import PromptGaze, SequenceEncoder
from gazerm.model.losses import regression_loss
from gazerm.train.batch import MicroBatch, UnitLabels
from gazerm.train.kinds.base import (
    Encoded,
    LossKind,
    Row,
    Window,
    encode_side,
    floats,
    response_fields,
    response_inputs,
)

if TYPE_CHECKING:  # the model module pulls in transformers; kinds only pass its output along
    from gazerm.model.reward_model import RewardOutput


class Regression(LossKind):
    name = "regression"
    metric_names: ClassVar[dict[str, str]] = {"mse": "squared_error", "mae": "abs_error"}
    shift_invariant: ClassVar[bool] = False  # ratings are absolute: the bias carries their mean

    def label_columns(self, num_outputs: int) -> list[str]:
        return ["attribute_scores" if num_outputs > 1 else "scores"]

    def unit_fields(self) -> list[pa.Field]:
        return [*response_fields(), pa.field("targets", pa.list_(pa.float32()))]

    def units(self, row: Row, num_outputs: int) -> list[dict[str, Any]]:
        targets = row["attribute_scores"] if num_outputs > 1 else [[s] for s in row["scores"] or []]
        if not targets:
            return []
        units = []
        for index, target in enumerate(targets):
            if len(target) != num_outputs:
                raise DataError(
                    row["source_file"],
                    row["source_row"],
                    "attribute_scores",
                    f"example {row['example_id']} has {len(target)} attribute scores but the model has "
                    f"num_outputs={num_outputs}",
                )
            units.append({"text": row["responses"][index], **response_inputs(row, index), "targets": target})
        return units

    def encode(
        self,
        encoder: SequenceEncoder,
        prefixes: list[str],
        window: Window,
        prompts: list[PromptGaze | None] | None = None,
    ) -> list[list[Encoded]]:
        return [[item] for item in encode_side(encoder, prefixes, window, "", prompts)]

    def micro_batch(
        self, encoder: SequenceEncoder, window: Window, units: list[list[Encoded]], rows: np.ndarray
    ) -> MicroBatch:
        inputs = encoder.pad([units[row][0] for row in rows])
        targets = torch.tensor(np.stack([floats(window["targets"][row]) for row in rows]))
        return MicroBatch(inputs, UnitLabels([str(window["source"][row]) for row in rows], targets=targets))

    def loss(
        self, output: RewardOutput, micro: MicroBatch, config: LossConfig
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return regression_loss(output.rewards, micro.labels.targets.view_as(output.rewards)), {}

    def eval_totals(
        self, rewards: torch.Tensor, labels: UnitLabels, use_margin: bool, tie_credit: float = 0.5
    ) -> dict[str, torch.Tensor]:
        targets = labels.targets.float().view_as(rewards)
        error = (rewards - targets).view(labels.num_units, -1)
        return {"squared_error": error.pow(2).mean(dim=1), "abs_error": error.abs().mean(dim=1)}
