"""``prepare``'s implicit step: session-log features joined onto the responses of a preference table.

Responses are matched by prompt, context and text (:class:`~gazerm.features.implicit.ResponseKey`).
A response no session viewed gets a null vector (or, with ``on_missing="raise"``, stops prepare
naming it); a session record that matches no response is counted and listed, never dropped
silently: it usually means the log and the preference data disagree on a text.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from gazerm.cache import file_sha256
from gazerm.data.config import OnMissing
from gazerm.data.errors import DataError
from gazerm.data.loaders.sessions import read_session_log
from gazerm.data.schema import PREFERENCE_SCHEMA
from gazerm.features.implicit import (
    IMPLICIT_FEATURE_NAMES,
    N_IMPLICIT,
    ImplicitFeatures,
    ResponseKey,
    SessionView,
    behaviour_features,
    normalise_implicit,
)

log = logging.getLogger(__name__)

IMPLICIT_TYPE = PREFERENCE_SCHEMA.field("implicit").type


def add_implicit(
    table: pa.Table, session_files: Sequence[Path], on_missing: OnMissing
) -> tuple[pa.Table, dict[str, Any]]:
    """The table with its ``implicit`` column filled, and the manifest's record of the join."""
    implicit = load_implicit(session_files)
    column, matched, missing = _implicit_column(table, implicit, on_missing)
    unmatched = [
        {"file": view.file, "row": view.row, "session_id": view.session_id}
        for key, views in implicit.views.items()
        if key not in matched
        for view in views
    ]
    if unmatched:
        shown = ", ".join(f"{u['file']} row {u['row']}" for u in unmatched[:5])
        log.warning("%d session records match no response (e.g. %s); see the manifest", len(unmatched), shown)
    responses = sum(len(row) for row in table.column("responses").to_pylist())
    log.info("implicit features for %d of %d responses", responses - missing, responses)
    report = {
        "feature_names": list(IMPLICIT_FEATURE_NAMES),
        "sessions": session_hashes(session_files),
        "session_records": implicit.records,
        "responses_with_features": responses - missing,
        "responses_without_features": missing,
        "unmatched_session_records": len(unmatched),
        "unmatched": unmatched,
    }
    index = table.schema.get_field_index("implicit")
    return table.set_column(index, table.schema.field(index), column), report


def session_hashes(session_files: Sequence[Path]) -> list[dict[str, str]]:
    """File and sha256 of each session log: a rewritten log must make ``prepare`` rebuild."""
    return [{"file": str(path), "sha256": file_sha256(path)} for path in session_files]


def _implicit_column(
    table: pa.Table, implicit: ImplicitFeatures, on_missing: OnMissing
) -> tuple[pa.Array, set[ResponseKey], int]:
    """Per row, one vector (or null) per response; the keys that matched and the responses that did not."""
    matched: set[ResponseKey] = set()
    missing = 0
    rows = []
    columns = ("prompt", "context", "responses", "source_file", "source_row")
    for prompt, context, responses, file, source_row in zip(
        *(table.column(name).to_pylist() for name in columns), strict=True
    ):
        vectors = []
        for index, response in enumerate(responses):
            key = ResponseKey.of(prompt, context, response)
            vector = implicit.features.get(key)
            if vector is None:
                if on_missing == "raise":
                    message = "no session log record views this response (implicit.on_missing is 'raise')"
                    raise DataError(file, source_row, f"responses[{index}]", message)
                missing += 1
            else:
                matched.add(key)
            vectors.append(None if vector is None else vector.tolist())
        rows.append(vectors)
    return pa.array(rows, IMPLICIT_TYPE), matched, missing


def load_implicit(paths: Sequence[str | Path]) -> ImplicitFeatures:
    """Read every session log and average each response's normalised features over its views."""
    views = [view for path in paths for view in read_session_log(path)]
    features = normalise_implicit(behaviour_features(views))
    index: dict[ResponseKey, int] = {}
    groups = np.array([index.setdefault(view.key, len(index)) for view in views], dtype=np.int64)
    sums = np.zeros((len(index), N_IMPLICIT), dtype=np.float64)
    np.add.at(sums, groups, features)
    means = (sums / np.bincount(groups, minlength=len(index))[:, None]).astype(np.float32)
    by_key: dict[ResponseKey, list[SessionView]] = {key: [] for key in index}
    for view in views:
        by_key[view.key].append(view)
    return ImplicitFeatures({key: means[i] for key, i in index.items()}, by_key)
