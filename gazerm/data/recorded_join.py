"""``prepare``'s recorded-gaze step (``gaze.predictor: recorded``): an eye-tracking study's fixations
become the ``gaze`` column, in place of a predictor's.

The fixation table (Parquet or CSV, ``gaze.path``) has one row per fixation: ``text`` (the response
that was read, verbatim), ``onset`` and ``duration`` (ms), ``word_idx`` (the word of
``gazerm.features.base.word_spans(text)`` fixated) and optionally ``reader``. The measures are
pymovements' over each reading, averaged over a text's readers (``gazerm.features.recorded``).
Responses are matched by their exact text; one nobody read gets no gaze (its tokens carry none) and is
counted, and a text read that is no response is counted and listed, never dropped silently.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from gazerm.cache import file_sha256
from gazerm.data.errors import DataError
from gazerm.features.base import N_FEATURES, WordGaze
from gazerm.features.featurize import gaze_column, set_column
from gazerm.features.recorded import gaze_from_fixations

log = logging.getLogger(__name__)

FIXATION_COLUMNS = ("text", "onset", "duration", "word_idx")
NOT_READ = WordGaze([], np.zeros((0, N_FEATURES), np.float32))


def read_fixations(path: str | Path) -> pl.DataFrame:
    """The fixation table, its required columns checked (``DataError`` naming the file and column)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), None, None, "recorded gaze: fixation file not found")
    fixations = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)
    for column in FIXATION_COLUMNS:
        if column not in fixations.columns:
            raise DataError(str(path), None, column, f"a fixation table needs the columns {FIXATION_COLUMNS}")
    return fixations


def add_recorded_gaze(table: pa.Table, path: str | Path) -> tuple[pa.Table, dict[str, Any]]:
    """The table with ``gaze`` from the recorded fixations and ``gaze_source`` ``recorded:<file>``, and
    the manifest's record of the match."""
    fixations = read_fixations(path)
    texts = fixations.get_column("text").unique(maintain_order=True).to_list()
    text_ids = {text: str(index) for index, text in enumerate(texts)}
    try:
        measured = gaze_from_fixations(
            fixations.with_columns(pl.col("text").replace_strict(text_ids).alias("text_id")),
            {text_id: text for text, text_id in text_ids.items()},
        )
    except ValueError as error:  # a word index past a text's last word
        raise DataError(str(path), None, "word_idx", str(error)) from error
    by_text = {text: measured[text_id] for text, text_id in text_ids.items() if text_id in measured}
    responses = table.column("responses").to_pylist()
    flat = [by_text.get(text, NOT_READ) for row in responses for text in row]
    read = {text for row in responses for text in row if text in by_text}
    unmatched = [text for text in by_text if text not in read]
    missing = sum(gaze is NOT_READ for gaze in flat)
    if unmatched:
        log.warning("%d texts read in %s are no response (e.g. %r)", len(unmatched), path, unmatched[0])
    log.info("recorded gaze for %d of %d responses", len(flat) - missing, len(flat))
    table = set_column(table, "gaze", gaze_column(flat, [len(row) for row in responses]))
    source = pa.array([f"recorded:{Path(path).name}"] * table.num_rows, pa.string())
    report = {
        "file": str(path),
        "sha256": file_sha256(path),
        "fixations": fixations.height,
        "responses_with_gaze": len(flat) - missing,
        "responses_without_gaze": missing,
        "texts_matching_no_response": len(unmatched),
        "unmatched_examples": unmatched[:20],
    }
    return set_column(table, "gaze_source", source), report
