"""Training units: the rows a worker trains on, flattened from preference examples by the loss kind
(``gazerm.train.kinds``: what a unit of each kind holds)."""

from __future__ import annotations

import pyarrow as pa

from gazerm.train.kinds import LossSpec
from gazerm.train.kinds.base import prompt_inputs


class ToUnits:
    """Preference-schema rows → the units of one loss kind (Arrow in, Arrow out)."""

    def __init__(self, loss: LossSpec) -> None:
        self.loss = loss
        self.schema = loss.kind.schema()

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
            units.extend({**header, **unit} for unit in self.loss.kind.units(row, self.loss.num_outputs))
        return pa.Table.from_pylist(units, schema=self.schema)
