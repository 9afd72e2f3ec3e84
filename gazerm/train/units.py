"""Training units: the rows a worker trains on, flattened from preference examples.

A preference example holds a prompt, n responses and labels; the losses want flat units:

- ``pairwise``: one row per (chosen, rejected) pair of an example, with both texts, their
  per-word gaze and implicit features, and the score margin of the pair (0 where the source has none);
- ``regression``: one row per rated response, with its targets (the scalar ``scores``, or the
  ``attribute_scores`` when the model has several outputs);
- ``listwise``: one row per example whose responses are ordered, with every ordered response and
  its tier (0 = best, tied responses share one): from the ``ranking``, else from the ``scores``,
  else from the single pair of a two-response example. An example whose responses are all tied
  says nothing about order and gives no unit (counted like any other unit-less example).

A unit keeps its conversation (``context`` and ``prompt``) unrendered: the prompt template (plain
transcript or the tokenizer's chat template) is a model-input choice, applied when batches are built.
``count_table_units`` sizes a block of a split (``train.order``) from its label columns alone.
"""

from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from gazerm.data.schema import TURN_TYPE

UnitKind = Literal["pairwise", "regression", "listwise"]

# Per response: its word gaze (flattened spans and features) and its implicit behaviour features.
_RESPONSE_COLUMNS = (
    ("spans", pa.list_(pa.int32())),
    ("features", pa.list_(pa.float32())),
    ("implicit", pa.list_(pa.float32())),
)


def _response_inputs(row: dict[str, Any], index: int) -> dict[str, list]:
    """One response's flattened word spans (2 per word) and gaze features (5 per word) and its implicit
    features (``_RESPONSE_COLUMNS``); each empty when the data has none for it."""
    gaze, implicit = row.get("gaze"), row.get("implicit")
    entry = gaze[index] if gaze else None
    return {
        "spans": [c for span in entry["word_spans"] for c in span] if entry else [],
        "features": [v for f in entry["features"] for v in f] if entry else [],
        "implicit": list(implicit[index] or []) if implicit else [],
    }


def _unit_schema(kind: UnitKind) -> pa.Schema:
    common = [
        pa.field("example_id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("prompt", pa.string()),
        pa.field("context", pa.list_(TURN_TYPE)),
    ]
    if kind == "pairwise":
        sides = [
            pa.field(f"{side}_{name}", kind_type)
            for side in ("chosen", "rejected")
            for name, kind_type in (("text", pa.string()), *_RESPONSE_COLUMNS)
        ]
        return pa.schema([*common, *sides, pa.field("margin", pa.float32())])
    if kind == "listwise":
        lists = [
            pa.field("texts", pa.list_(pa.string())),
            *(pa.field(name, pa.list_(kind_type)) for name, kind_type in _RESPONSE_COLUMNS),
        ]
        return pa.schema([*common, *lists, pa.field("tiers", pa.list_(pa.int32()))])
    return pa.schema(
        [
            *common,
            pa.field("text", pa.string()),
            *(pa.field(name, kind_type) for name, kind_type in _RESPONSE_COLUMNS),
            pa.field("targets", pa.list_(pa.float32())),
        ]
    )


def _pair_units(row: dict[str, Any]) -> list[dict[str, Any]]:
    units = []
    for pair in row["pairs"] or []:
        unit = {"margin": pair["margin"] or 0.0}
        for side in ("chosen", "rejected"):
            index = pair[side]
            unit[f"{side}_text"] = row["responses"][index]
            unit.update({f"{side}_{name}": value for name, value in _response_inputs(row, index).items()})
        units.append(unit)
    return units


def _rated_units(row: dict[str, Any], num_outputs: int) -> list[dict[str, Any]]:
    targets = row["attribute_scores"] if num_outputs > 1 else [[s] for s in row["scores"] or []]
    if not targets:
        return []
    units = []
    for index, target in enumerate(targets):
        if len(target) != num_outputs:
            raise ValueError(
                f"example {row['example_id']} ({row['source_file']}, row {row['source_row']}) has "
                f"{len(target)} attribute scores but the model has num_outputs={num_outputs}"
            )
        units.append({"text": row["responses"][index], **_response_inputs(row, index), "targets": target})
    return units


def list_tiers(row: dict[str, Any]) -> list[tuple[int, int]]:
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


def _list_units(row: dict[str, Any]) -> list[dict[str, Any]]:
    tiers = list_tiers(row)
    if not tiers:
        return []
    inputs = [_response_inputs(row, index) for index, _ in tiers]
    return [
        {
            "texts": [row["responses"][index] for index, _ in tiers],
            **{name: [item[name] for item in inputs] for name, _ in _RESPONSE_COLUMNS},
            "tiers": [tier for _, tier in tiers],
        }
    ]


class ToUnits:
    """``map_batches`` callable: preference-schema rows → pairwise or regression units."""

    def __init__(self, kind: UnitKind, num_outputs: int = 1) -> None:
        self.kind = kind
        self.num_outputs = num_outputs
        self.schema = _unit_schema(kind)

    def __call__(self, batch: pa.Table) -> pa.Table:
        units = []
        for row in batch.to_pylist():
            header = {
                "example_id": row["example_id"],
                "source": row["source"],
                "domain": row["domain"],
                "prompt": row["prompt"],
                "context": row["context"],
            }
            if self.kind == "pairwise":
                body = _pair_units(row)
            elif self.kind == "listwise":
                body = _list_units(row)
            else:
                body = _rated_units(row, self.num_outputs)
            units.extend({**header, **unit} for unit in body)
        return pa.Table.from_pylist(units, schema=self.schema)


def label_columns(kind: UnitKind, num_outputs: int = 1) -> list[str]:
    """The columns that decide how many units a preference row gives."""
    if kind == "listwise":
        return ["ranking", "scores", "pairs", "responses"]
    return ["pairs" if kind == "pairwise" else "attribute_scores" if num_outputs > 1 else "scores"]


def count_table_units(table: pa.Table, kind: UnitKind, num_outputs: int = 1) -> int:
    """Units the rows of ``table`` (at least its ``label_columns``) give."""
    if kind == "listwise":
        return sum(bool(list_tiers(row)) for row in table.select(label_columns(kind)).to_pylist())
    column = label_columns(kind, num_outputs)[0]
    lengths = pc.list_value_length(table.column(column))
    return pc.sum(pc.fill_null(lengths, 0)).as_py() or 0
