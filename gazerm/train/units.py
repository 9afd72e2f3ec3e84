"""Training units: the rows a worker trains on, flattened from preference examples by Ray Data.

A preference example holds a prompt, n responses and labels; the losses want flat units:

- ``pairwise``: one row per (chosen, rejected) pair of an example, with both texts and
  their per-word gaze, and the score margin of the pair (0 where the source has none);
- ``regression``: one row per rated response, with its targets (the scalar ``scores``, or the
  ``attribute_scores`` when the model has several outputs).

Flattening happens in ``map_batches`` before the stream is split over workers, so every
worker gets the same number of units (``streaming_split(equal=True)``) and the DeepSpeed
collectives of all ranks stay in step.
"""

from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

UnitKind = Literal["pairwise", "regression"]

_GAZE_COLUMNS = (("spans", pa.list_(pa.int32())), ("features", pa.list_(pa.float32())))


def render_prompt(context: list[dict[str, str]] | None, prompt: str) -> str:
    """The conversation before the response, in the Human/Assistant format the HH/DSP data uses.

    The response is appended to this prefix verbatim, so a response's character offsets in
    the model input are its own offsets shifted by ``len(prefix)`` (gaze alignment needs that).
    """
    speaker = {"user": "Human", "human": "Human", "prompter": "Human", "assistant": "Assistant"}
    turns = [f"\n\n{speaker.get(t['role'], t['role'].capitalize())}: {t['content']}" for t in context or []]
    return "".join(turns) + f"\n\nHuman: {prompt}\n\nAssistant: "


def _gaze_of(row: dict[str, Any], index: int) -> tuple[list[int], list[float]]:
    """Flattened word spans (2 per word) and features (5 per word) of one response; empty without gaze."""
    gaze = row.get("gaze")
    if not gaze or gaze[index] is None:
        return [], []
    entry = gaze[index]
    return [c for span in entry["word_spans"] for c in span], [v for f in entry["features"] for v in f]


def _unit_schema(kind: UnitKind) -> pa.Schema:
    common = [
        pa.field("example_id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("prefix", pa.string()),
    ]
    if kind == "pairwise":
        sides = [
            pa.field(f"{side}_{name}", kind_type)
            for side in ("chosen", "rejected")
            for name, kind_type in (("text", pa.string()), *_GAZE_COLUMNS)
        ]
        return pa.schema([*common, *sides, pa.field("margin", pa.float32())])
    return pa.schema(
        [
            *common,
            pa.field("text", pa.string()),
            *(pa.field(name, kind_type) for name, kind_type in _GAZE_COLUMNS),
            pa.field("targets", pa.list_(pa.float32())),
        ]
    )


def _pair_units(row: dict[str, Any]) -> list[dict[str, Any]]:
    units = []
    for pair in row["pairs"] or []:
        unit = {"margin": pair["margin"] or 0.0}
        for side in ("chosen", "rejected"):
            index = pair[side]
            spans, features = _gaze_of(row, index)
            unit.update(
                {
                    f"{side}_text": row["responses"][index],
                    f"{side}_spans": spans,
                    f"{side}_features": features,
                }
            )
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
        spans, features = _gaze_of(row, index)
        units.append(
            {"text": row["responses"][index], "spans": spans, "features": features, "targets": target}
        )
    return units


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
                "prefix": render_prompt(row["context"], row["prompt"]),
            }
            body = _pair_units(row) if self.kind == "pairwise" else _rated_units(row, self.num_outputs)
            units.extend({**header, **unit} for unit in body)
        return pa.Table.from_pylist(units, schema=self.schema)


def count_units(shard_paths: list[str], kind: UnitKind, num_outputs: int = 1) -> int:
    """Units in a split, read from the label column alone (no need to run the pipeline to size it)."""
    column = "pairs" if kind == "pairwise" else "attribute_scores" if num_outputs > 1 else "scores"
    total = 0
    for path in shard_paths:
        lengths = pc.list_value_length(pq.read_table(path, columns=[column]).column(column))
        total += pc.sum(pc.fill_null(lengths, 0)).as_py() or 0
    return total
