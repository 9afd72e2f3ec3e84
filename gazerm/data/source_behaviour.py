"""``prepare``'s handling of behaviour a source recorded itself (IFLLM's release): the ``gaze`` and
``implicit`` columns its examples fill, kept or cleared, and the manifest's record of them.

``gaze.predictor: source`` keeps the recorded gaze (``gaze_source`` ``recorded:<format>``); a source
whose rows have none is an error naming it. Any other predictor replaces the gaze, so the recorded
one is cleared first (``none`` must leave no gaze). A source's ``implicit`` column is kept when no
session logs are configured; both at once is an error (two feature sets in one column).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from gazerm.data.errors import DataError
from gazerm.errors import ConfigError
from gazerm.features.featurize import set_column


def keep_source_gaze(table: pa.Table) -> pa.Table:
    """The table as it is, once every source has recorded gaze on its rows."""
    lacking = pc.unique(table.filter(pc.is_null(table.column("gaze_source"))).column("source")).to_pylist()
    if lacking:
        raise DataError(
            ", ".join(lacking), None, "gaze", "gaze.predictor=source, but this source records no gaze"
        )
    return table


def clear_source_gaze(table: pa.Table) -> pa.Table:
    """The table without any recorded gaze, for a predictor to fill (or ``none`` to leave empty)."""
    for name in ("gaze", "gaze_source"):
        table = set_column(table, name, pa.nulls(table.num_rows, table.schema.field(name).type))
    return table


def source_implicit(table: pa.Table, stats: list[dict[str, Any]], sessions: bool) -> dict[str, Any] | None:
    """The manifest's ``implicit`` record for features the sources filled (None when none did)."""
    filled = pc.sum(pc.invert(pc.is_null(table.column("implicit")))).as_py() or 0
    if not filled:
        return None
    if sessions:
        raise ConfigError(
            "implicit: session logs are configured, but a source fills the implicit column itself"
        )
    names = {tuple(stat["implicit_feature_names"]) for stat in stats if stat.get("implicit_feature_names")}
    if len(names) != 1:
        raise ConfigError(f"the sources give implicit features under different names: {sorted(names)}")
    vectors = [vector for row in table.column("implicit").to_pylist() if row for vector in row]
    with_features = sum(vector is not None for vector in vectors)
    return {
        "feature_names": list(names.pop()),
        "from_sources": [stat["input"] for stat in stats if stat.get("implicit_feature_names")],
        "responses_with_features": with_features,
        "responses_without_features": sum(len(row) for row in table.column("responses").to_pylist())
        - with_features,
    }
