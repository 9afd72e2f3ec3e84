"""Training units: the rows a worker trains on, flattened from preference examples by the loss kind
(``gazerm.train.kinds``: what a unit of each kind holds)."""

from __future__ import annotations

import pyarrow as pa

from gazerm.model.config import LossKindName
from gazerm.train.kinds import loss_kind
from gazerm.train.kinds.base import prompt_inputs


class ToUnits:
    """Preference-schema rows → the units of one loss kind (Arrow in, Arrow out)."""

    def __init__(self, kind: LossKindName, num_outputs: int = 1) -> None:
        self.kind = loss_kind(kind)
        self.num_outputs = num_outputs
        self.schema = self.kind.schema()

    def __call__(self, batch: pa.Table) -> pa.Table:
        units = []
        for row in batch.to_pylist():
            header = {
                "example_id": row["example_id"],
                "source": row["source"],
                "domain": row["domain"],
                "prompt": row["prompt"],
                "context": row["context"],
                **prompt_inputs(row),
            }
            units.extend({**header, **unit} for unit in self.kind.units(row, self.num_outputs))
        return pa.Table.from_pylist(units, schema=self.schema)
