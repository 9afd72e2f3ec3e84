"""Real eye-tracking recordings → the same per-word ``WordGaze`` the predictors give.

Two inputs, one path:

1. Raw samples (``time`` in ms, ``x``, ``y`` in screen pixels, plus the text/reader columns):
   :func:`detect_fixations` runs pymovements' I-DT fixation detection (Salvucci & Goldberg 2000)
   per reading and returns a fixation table with each fixation's mean location.
2. A fixation table (text/reader columns, ``onset``, ``duration`` and either ``word_idx`` or the
   fixation's ``x``/``y``): :func:`gaze_from_fixations` maps fixations to word areas of interest
   when needed and computes the reading measures with pymovements'
   ``compute_reading_measures``, then averages them over the readers of each text.

Word ``i`` is word ``i`` of ``base.word_spans(text)`` (whitespace words, punctuation attached);
AOI tables and ``word_idx`` columns must use that numbering. A reading is one reader reading one
text; the measures per reading are pymovements' ``TFC`` (nFix), ``FD`` (FFD: first fixation in
any pass), ``RPD_inc`` (GPT: go-past time), ``TFT`` (TRT) and ``Fix`` (fixated or not). Over the
readings of a text, nFix, GPT, TRT and fixProp are means over all readings (0 when a reader
skipped the word), FFD is the mean over the readings that fixated the word, so that skipping
shows in fixProp only — the same convention the reading model follows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from gazerm.features.base import FEATURE_NAMES, WordGaze, normalise, word_spans

AOI_COLUMNS = ("word_idx", "x", "y", "width", "height")


def detect_fixations(
    samples: pl.DataFrame,
    *,
    group_columns: Sequence[str] = ("text_id", "reader"),
    dispersion_threshold: float = 25.0,
    minimum_duration: int = 50,
) -> pl.DataFrame:
    """Fixations (group columns, onset, duration, x, y) from raw ``time``/``x``/``y`` samples.

    ``dispersion_threshold`` is in pixels (about 1° of visual angle on a typical reading setup)
    and ``minimum_duration`` in ms; the shortest reading fixations last about 50 ms (Rayner 1998).
    """
    import pymovements as pm  # here, not at module level: see gaze_from_fixations

    gaze = pm.Gaze(
        samples.select(*group_columns, "time", "x", "y"),
        trial_columns=list(group_columns),
        time_column="time",
        time_unit="ms",
        position_columns=["x", "y"],
    )
    gaze.detect("idt", dispersion_threshold=dispersion_threshold, minimum_duration=minimum_duration)
    gaze.compute_event_properties(("location", {"method": "mean"}))
    fixations = gaze.events.frame.filter(pl.col("name") == "fixation")
    return fixations.select(
        *group_columns,
        "onset",
        "duration",
        pl.col("location").list.get(0).alias("x"),
        pl.col("location").list.get(1).alias("y"),
    )


def map_to_words(fixations: pl.DataFrame, aois: pl.DataFrame, text_column: str = "text_id") -> pl.DataFrame:
    """Add ``word_idx``: the word box (half-open ``[x, x+width)``) holding each fixation, else null."""
    boxes = aois.select(text_column, *(pl.col(c).alias(f"_aoi_{c}") for c in AOI_COLUMNS))
    indexed = fixations.with_row_index("_fixation")
    hits = (
        indexed.join(boxes, on=text_column)
        .filter(
            (pl.col("x") >= pl.col("_aoi_x"))
            & (pl.col("x") < pl.col("_aoi_x") + pl.col("_aoi_width"))
            & (pl.col("y") >= pl.col("_aoi_y"))
            & (pl.col("y") < pl.col("_aoi_y") + pl.col("_aoi_height"))
        )
        .group_by("_fixation")
        .agg(pl.col("_aoi_word_idx").min().alias("word_idx"))
    )
    return indexed.join(hits, on="_fixation", how="left").sort("_fixation").drop("_fixation")


def gaze_from_fixations(
    fixations: pl.DataFrame,
    texts: Mapping[str, str],
    aois: pl.DataFrame | None = None,
    *,
    text_column: str = "text_id",
    reader_column: str = "reader",
) -> dict[str, WordGaze]:
    """Normalised per-word gaze of every text that has fixations, averaged over its readers.

    Without a ``reader_column`` each text counts as read once (fixProp is then 0 or 1). Without
    ``word_idx``, fixations are placed on words through ``aois`` (see :data:`AOI_COLUMNS`);
    fixations outside every word box are left out of all measures, as pymovements does.
    """
    # pymovements (with scipy and scikit-learn) takes seconds to import; the training workers reach this
    # module through the data config (train.config → data.prepare) and never call it.
    from pymovements.measure.reading import compute_reading_measures

    if "word_idx" not in fixations.columns:
        if aois is None:
            raise ValueError("fixations have no word_idx column, so word AOIs (aois=...) are needed")
        fixations = map_to_words(fixations, aois, text_column)
    if reader_column not in fixations.columns:
        fixations = fixations.with_columns(pl.lit("0").alias(reader_column))
    groups = [text_column, reader_column]
    words = _word_table(texts, fixations, text_column)
    readings = fixations.select(groups).unique()
    measures = compute_reading_measures(
        fixations.select(*groups, "word_idx", "onset", "duration").sort(*groups, "onset"),
        words.join(readings, on=text_column),
        group_columns=groups,
    )
    fixated = pl.col("Fix") == 1
    per_word = (
        measures.group_by(text_column, "word_index")
        .agg(
            pl.col("TFC").mean().alias("nFix"),
            pl.col("FD").filter(fixated).mean().fill_null(0.0).alias("FFD"),
            pl.col("RPD_inc").mean().alias("GPT"),
            pl.col("TFT").mean().alias("TRT"),
            pl.col("Fix").mean().alias("fixProp"),
        )
        .sort(text_column, "word_index")
    )
    return {
        text_id: WordGaze(word_spans(texts[text_id]), normalise(part.select(FEATURE_NAMES).to_numpy()))
        for (text_id,), part in per_word.partition_by(text_column, as_dict=True, maintain_order=True).items()
    }


def _word_table(texts: Mapping[str, str], fixations: pl.DataFrame, text_column: str) -> pl.DataFrame:
    """One row per word of every text that was read; fails loudly on unknown texts or word indices."""
    read = fixations.group_by(text_column).agg(pl.col("word_idx").max().alias("last"))
    rows: dict[str, list] = {text_column: [], "word_idx": [], "word": []}
    for text_id, last in read.iter_rows():
        if text_id not in texts:
            raise ValueError(f"fixations refer to text {text_id!r}, which is not among the given texts")
        text = texts[text_id]
        spans = word_spans(text)
        if last is not None and last >= len(spans):
            raise ValueError(f"text {text_id!r} has {len(spans)} words but fixations refer to word {last}")
        rows[text_column] += [text_id] * len(spans)
        rows["word_idx"] += list(range(len(spans)))
        rows["word"] += [text[a:b] for a, b in spans]
    schema = {text_column: fixations.schema[text_column], "word_idx": pl.Int64, "word": pl.String}
    return pl.DataFrame(rows, schema=schema)
