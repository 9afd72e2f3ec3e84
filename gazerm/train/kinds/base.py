"""What a loss kind is: its training unit, how units become a micro-batch, its loss and its validation
totals, in one object (``gazerm.train.kinds`` registers them).

Every unit carries its example's id, source and domain, and its conversation (``context`` and
``prompt``) unrendered: the prompt template is a model-input choice, applied when batches are built.
It carries the prompt's word gaze (flattened; empty where the shards have none) and, per response, the
word gaze (flattened spans and features) and the implicit features.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from gazerm.data.schema import TURN_TYPE
from gazerm.model.config import LossConfig, ModelConfig
from gazerm.model.inputs import PromptGaze, PromptResponse, SequenceEncoder
from gazerm.train.batch import MicroBatch, UnitLabels

if TYPE_CHECKING:  # the model module pulls in transformers; kinds only pass its output along
    from gazerm.model.reward_model import RewardOutput

# Per response: its word gaze (flattened spans and features) and its implicit behaviour features.
RESPONSE_COLUMNS = (
    ("spans", pa.list_(pa.int32())),
    ("features", pa.list_(pa.float32())),
    ("implicit", pa.list_(pa.float32())),
)
COMMON_FIELDS = [
    pa.field("example_id", pa.string()),
    pa.field("source", pa.string()),
    pa.field("domain", pa.string()),
    pa.field("prompt", pa.string()),
    pa.field("context", pa.list_(TURN_TYPE)),
    pa.field("prompt_spans", pa.list_(pa.int32())),
    pa.field("prompt_features", pa.list_(pa.float32())),
]

Row = dict[str, Any]  # a preference-schema row, as to_pylist gives it
Window = dict[str, list]  # a window of units, column → values
Encoded = dict[str, np.ndarray]  # one tokenized sequence (SequenceEncoder.encode)


def response_inputs(row: Row, index: int) -> dict[str, list]:
    """One response's flattened word spans (2 per word) and gaze features (5 per word) and its implicit
    features (``RESPONSE_COLUMNS``); each empty when the data has none for it."""
    gaze, implicit = row.get("gaze"), row.get("implicit")
    entry = gaze[index] if gaze else None
    return {
        "spans": [c for span in entry["word_spans"] for c in span] if entry else [],
        "features": [v for f in entry["features"] for v in f] if entry else [],
        "implicit": list(implicit[index] or []) if implicit else [],
    }


def prompt_inputs(row: Row) -> dict[str, list]:
    """The prompt's flattened word spans and gaze features; empty where the row has none (shards written
    before ``prompt_gaze`` existed, or without a gaze predictor)."""
    entry = row.get("prompt_gaze")
    return {
        "prompt_spans": [c for span in entry["word_spans"] for c in span] if entry else [],
        "prompt_features": [v for f in entry["features"] for v in f] if entry else [],
    }


def ordered_right(difference: torch.Tensor, tie_credit: float = 0.5) -> torch.Tensor:
    """1 where the better response's reward is higher, ``tie_credit`` where the rewards tie, else 0. Half is
    the rule of every accuracy gazerm reports unless ``run.accuracy_ties`` says otherwise (offline
    evaluation, controls), so a model that cannot tell two responses apart (an implicit-only model on two
    responses nobody read) scores chance, not zero or one."""
    return (difference > 0).float() + tie_credit * (difference == 0).float()


def floats(values: Any) -> np.ndarray:
    return np.asarray(values if values is not None else [], dtype=np.float32)


def encode_side(
    encoder: SequenceEncoder,
    prefixes: list[str],
    window: Window,
    prefix: str,
    prompts: list[PromptGaze | None] | None = None,
) -> list[Encoded]:
    """Each unit's response ``{prefix}text``, with its word gaze and implicit features (and its prompt's
    word gaze, ``prompts``), encoded."""
    return encoder.encode(
        [
            PromptResponse(head, text, floats(spans), floats(features), floats(implicit), prompt)
            for head, prompt, text, spans, features, implicit in zip(
                prefixes,
                prompts or [None] * len(prefixes),
                window[f"{prefix}text"],
                window[f"{prefix}spans"],
                window[f"{prefix}features"],
                window[f"{prefix}implicit"],
                strict=True,
            )
        ]
    )


class LossKind(ABC):
    """One way of learning from labels. ``metric_names`` maps each validation metric to the per-unit
    total it is the mean of (``val/<name> = totals[key] / count``)."""

    name: ClassVar[str]
    metric_names: ClassVar[dict[str, str]]
    # A loss that sees only reward differences gives the value head's bias no signal, only float noise
    # that Adam would amplify; the trainer freezes it at 0 so the reward needs no bias (as a transformers
    # ``*ForSequenceClassification`` score layer has none, which ``gazerm export`` relies on).
    shift_invariant: ClassVar[bool] = True

    @abstractmethod
    def label_columns(self, num_outputs: int) -> list[str]:
        """The preference-schema columns that decide how many units a row gives."""

    def count(self, table: pa.Table, num_outputs: int) -> int:
        """Units the rows of ``table`` (at least its label columns) give: by default one per item of the
        first label column's lists."""
        lengths = pc.list_value_length(table.column(self.label_columns(num_outputs)[0]))
        return pc.sum(pc.fill_null(lengths, 0)).as_py() or 0

    @abstractmethod
    def unit_fields(self) -> list[pa.Field]:
        """The unit's own columns, after ``COMMON_FIELDS``."""

    @abstractmethod
    def units(self, row: Row, num_outputs: int) -> list[dict[str, Any]]:
        """The unit columns of each unit ``row`` gives (none where its labels say nothing)."""

    @abstractmethod
    def encode(
        self,
        encoder: SequenceEncoder,
        prefixes: list[str],
        window: Window,
        prompts: list[PromptGaze | None] | None = None,
    ) -> list[list[Encoded]]:
        """Per unit of ``window``, its encoded sequences (``prefixes``: each unit's rendered conversation;
        ``prompts``: its prompt's word gaze placed in it, ``SequenceEncoder.prefix``)."""

    @abstractmethod
    def micro_batch(
        self, encoder: SequenceEncoder, window: Window, units: list[list[Encoded]], rows: np.ndarray
    ) -> MicroBatch:
        """The units at ``rows`` of the window as one padded micro-batch."""

    @abstractmethod
    def loss(
        self, output: RewardOutput, micro: MicroBatch, config: LossConfig
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The micro-batch's loss and detached details (``train/...``); ``micro`` on the rewards' device."""

    @abstractmethod
    def eval_totals(
        self, rewards: torch.Tensor, labels: UnitLabels, use_margin: bool, tie_credit: float = 0.5
    ) -> dict[str, torch.Tensor]:
        """Per unit, what validation sums (CPU tensors of length B); ``tie_credit``: what a tie of two
        rewards counts as in an accuracy (``ordered_right``)."""

    def forward_groups(self, model: ModelConfig) -> int:
        """How many separate forwards a micro-batch's rows run as (``RewardModel.forward``'s ``groups``)."""
        return 1

    def shares_prefix(self, model: ModelConfig) -> bool:
        """Whether a micro-batch's rows run as pairs sharing their common prefix (``shared_prefix``)."""
        return False

    def ratios(self, totals: dict[str, float], prefix: str) -> dict[str, float]:
        """The validation metrics from summed totals."""
        count = totals["count"]
        return {f"{prefix}/{name}": totals[key] / count for name, key in self.metric_names.items()}

    def schema(self) -> pa.Schema:
        return pa.schema([*COMMON_FIELDS, *self.unit_fields()])


def response_fields(prefix: str = "") -> list[pa.Field]:
    """The text and ``RESPONSE_COLUMNS`` fields of one response, named ``{prefix}text`` and so on."""
    return [pa.field(f"{prefix}{name}", kind) for name, kind in (("text", pa.string()), *RESPONSE_COLUMNS)]
