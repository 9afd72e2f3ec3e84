"""``listwise``: the Plackett-Luce likelihood of each prompt's ordered responses, ties sharing a tier
(Breslow); with two responses it is the pairwise Bradley-Terry loss.

A unit is one example whose responses are ordered, with every ordered response and its tier (0 = best,
tied responses share one): from the ``ranking``, else from the ``scores``, else from the single pair of
a two-response example. An example whose responses are all tied says nothing about order and gives no
unit. A micro-batch stacks each list's responses one list after another; ``list_index`` says where
each list's responses landed. Validation reports the accuracy over every ordered pair of a list.
"""

from __future__ import annotations

from itertools import pairwise
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
import torch

from gazerm.model.config import LossConfig
from gazerm.model.inputs import PromptGaze, PromptResponse, SequenceEncoder
from gazerm.model.losses import list_scores, listwise_log_likelihood, listwise_loss
from gazerm.train.batch import MicroBatch, UnitLabels
from gazerm.train.kinds.base import (
    RESPONSE_COLUMNS,
    Encoded,
    LossKind,
    Row,
    Window,
    floats,
    ordered_right,
    response_inputs,
)

if TYPE_CHECKING:  # the model module pulls in transformers; kinds only pass its output along
    from gazerm.model.reward_model import RewardOutput


def list_tiers(row: Row) -> list[tuple[int, int]]:
    """``(response index, tier)`` of each ordered response of an example, best first; empty when the
    example orders fewer than two responses or ties them all."""
    if row.get("ranking"):
        ordered = list(enumerate(row["ranking"]))
        return [(index, tier) for tier, index in ordered] if len(ordered) > 1 else []
    if row.get("scores"):
        levels = sorted(set(row["scores"]), reverse=True)
        tiers = [(index, levels.index(score)) for index, score in enumerate(row["scores"])]
        return sorted(tiers, key=lambda item: item[1]) if len(levels) > 1 else []
    pairs = row.get("pairs") or []
    if len(pairs) == 1 and len(row["responses"]) == 2:
        return [(pairs[0]["chosen"], 0), (pairs[0]["rejected"], 1)]
    return []


class Listwise(LossKind):
    name = "listwise"
    metric_names: ClassVar[dict[str, str]] = {"loss": "loss"}

    def label_columns(self, num_outputs: int) -> list[str]:
        return ["ranking", "scores", "pairs", "responses"]

    def count(self, table: pa.Table, num_outputs: int) -> int:
        return sum(bool(list_tiers(row)) for row in table.select(self.label_columns(num_outputs)).to_pylist())

    def unit_fields(self) -> list[pa.Field]:
        return [
            pa.field("texts", pa.list_(pa.string())),
            *(pa.field(name, pa.list_(kind)) for name, kind in RESPONSE_COLUMNS),
            pa.field("tiers", pa.list_(pa.int32())),
        ]

    def units(self, row: Row, num_outputs: int) -> list[dict[str, Any]]:
        tiers = list_tiers(row)
        if not tiers:
            return []
        inputs = [response_inputs(row, index) for index, _ in tiers]
        return [
            {
                "texts": [row["responses"][index] for index, _ in tiers],
                **{name: [item[name] for item in inputs] for name, _ in RESPONSE_COLUMNS},
                "tiers": [tier for _, tier in tiers],
            }
        ]

    def encode(
        self,
        encoder: SequenceEncoder,
        prefixes: list[str],
        window: Window,
        prompts: list[PromptGaze | None] | None = None,
    ) -> list[list[Encoded]]:
        sizes = [len(texts) for texts in window["texts"]]
        sequences = [
            PromptResponse(prefix, text, *(floats(values) for values in inputs), prompt)
            for prefix, prompt, texts, *lists in zip(
                prefixes,
                prompts or [None] * len(prefixes),
                window["texts"],
                window["spans"],
                window["features"],
                window["implicit"],
                strict=True,
            )
            for text, *inputs in zip(texts, *lists, strict=True)
        ]
        encoded = encoder.encode(sequences)
        bounds = np.cumsum([0, *sizes])
        return [encoded[start:end] for start, end in pairwise(bounds)]

    def micro_batch(
        self, encoder: SequenceEncoder, window: Window, units: list[list[Encoded]], rows: np.ndarray
    ) -> MicroBatch:
        inputs = encoder.pad([item for row in rows for item in units[row]])
        width = max(len(units[row]) for row in rows)
        list_index = torch.full((len(rows), width), -1, dtype=torch.long)
        tiers = torch.zeros((len(rows), width), dtype=torch.long)
        offset = 0
        for slot, row in enumerate(rows):
            size = len(units[row])
            list_index[slot, :size] = torch.arange(offset, offset + size)
            tiers[slot, :size] = torch.as_tensor(window["tiers"][row], dtype=torch.long)
            offset += size
        sources = [str(window["source"][row]) for row in rows]
        return MicroBatch(inputs, UnitLabels(sources, list_index=list_index, tiers=tiers))

    def loss(
        self, output: RewardOutput, micro: MicroBatch, config: LossConfig
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        scores, mask = list_scores(output.rewards, micro.labels.list_index)
        return listwise_loss(scores, micro.labels.tiers, mask), {}

    def eval_totals(
        self, rewards: torch.Tensor, labels: UnitLabels, use_margin: bool, tie_credit: float = 0.5
    ) -> dict[str, torch.Tensor]:
        """Per list: its loss, its ordered pairs (i in a better tier than j) and how many of them the
        rewards order right."""
        scores, mask = list_scores(rewards, labels.list_index)
        tiers = labels.tiers
        ordered = mask[:, :, None] & mask[:, None, :] & (tiers[:, :, None] < tiers[:, None, :])
        right = ordered * ordered_right(scores[:, :, None] - scores[:, None, :], tie_credit)
        return {
            "loss": -listwise_log_likelihood(scores, tiers, mask),
            "pairs": ordered.sum((1, 2)).float(),
            "correct_pairs": right.sum((1, 2)),
        }

    def ratios(self, totals: dict[str, float], prefix: str) -> dict[str, float]:
        accuracy = totals["correct_pairs"] / max(totals["pairs"], 1)
        return {**super().ratios(totals, prefix), f"{prefix}/accuracy": accuracy}
