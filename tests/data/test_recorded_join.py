"""``gaze.predictor: recorded``: an eye-tracking study's fixations become the prepared ``gaze`` column,
matched to responses by text, with every unread response and unmatched text counted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gazerm.data.config import GazeSpec, PrepareConfig, SourceSpec
from gazerm.data.errors import DataError
from gazerm.data.prepare import prepare
from gazerm.data.synthetic import write_gaze_decided_set
from gazerm.features.base import FEATURE_NAMES
from gazerm.features.recorded import gaze_from_fixations

TRT = FEATURE_NAMES.index("TRT")


def config(tmp_path: Path, pairs: Path, fixations: Path) -> PrepareConfig:
    return PrepareConfig(
        sources=[SourceSpec(format="generic", path=str(pairs))],
        output_dir=str(tmp_path / "shards"),
        splits={"train": 1.0, "validation": 0.0, "test": 0.0},
        gaze=GazeSpec(predictor="recorded", path=str(fixations)),
    )


def rows(tmp_path: Path) -> list[dict]:
    return pq.read_table(next((tmp_path / "shards" / "train").glob("*.parquet"))).to_pylist()


def test_the_recorded_measures_reach_every_response(tmp_path):
    pairs, fixations = write_gaze_decided_set(tmp_path, n=20, seed=4)
    manifest = prepare(config(tmp_path, pairs, fixations))

    assert manifest.gaze_source == "recorded:fixations.parquet"
    assert manifest.recorded_gaze["responses_with_gaze"] == 40
    assert manifest.recorded_gaze["responses_without_gaze"] == 0
    table = rows(tmp_path)
    examples = {json.loads(line)["prompt"]: json.loads(line) for line in pairs.read_text().splitlines()}
    reading = pl.read_parquet(fixations)
    for row in table:
        chosen = row["responses"].index(examples[row["prompt"]]["chosen"])
        trt = [np.mean([word[TRT] for word in gaze["features"]]) for gaze in row["gaze"]]
        assert trt[chosen] < trt[1 - chosen]  # read fluently: the synthetic set's only signal
        text = row["responses"][0]
        read = reading.filter(pl.col("text") == text).with_columns(text_id=pl.lit("t")).drop("text")
        expected = gaze_from_fixations(read, {"t": text})["t"]
        np.testing.assert_allclose(row["gaze"][0]["features"], expected.features, rtol=1e-6)
        assert [tuple(span) for span in row["gaze"][0]["word_spans"]] == expected.spans


def test_unread_responses_and_unknown_texts_are_counted_not_dropped(tmp_path):
    pairs, fixations = write_gaze_decided_set(tmp_path, n=3, seed=1)
    lines = [json.loads(line) for line in pairs.read_text().splitlines()]
    lines[0]["rejected"] = "A reply nobody read."
    pairs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    manifest = prepare(config(tmp_path, pairs, fixations))

    report = manifest.recorded_gaze
    assert (report["responses_with_gaze"], report["responses_without_gaze"]) == (5, 1)
    assert report["texts_matching_no_response"] == 1  # the original rejected reply of the first pair
    unread = next(row for row in rows(tmp_path) if "A reply nobody read." in row["responses"])
    assert unread["gaze"][unread["responses"].index("A reply nobody read.")]["features"] == []


@pytest.mark.parametrize(
    ("change", "field"),
    [(lambda t: t.drop_columns(["word_idx"]), "word_idx"), (lambda t: t.drop_columns(["onset"]), "onset")],
)
def test_a_fixation_table_without_a_needed_column_names_it(tmp_path, change, field):
    pairs, fixations = write_gaze_decided_set(tmp_path, n=2, seed=1)
    pq.write_table(change(pq.read_table(fixations)), fixations)
    with pytest.raises(DataError) as caught:
        prepare(config(tmp_path, pairs, fixations))
    assert (caught.value.file, caught.value.field) == (str(fixations), field)


def test_a_word_index_past_the_text_is_an_error_naming_the_file(tmp_path):
    pairs, fixations = write_gaze_decided_set(tmp_path, n=2, seed=1)
    table = pq.read_table(fixations)
    words = table.column("word_idx").to_numpy().copy()
    words[0] = 999
    index = table.schema.get_field_index("word_idx")
    pq.write_table(table.set_column(index, "word_idx", pa.array(words)), fixations)
    with pytest.raises(DataError, match="refer to word 999") as caught:
        prepare(config(tmp_path, pairs, fixations))
    assert caught.value.field == "word_idx"


def test_recorded_gaze_needs_its_file():
    with pytest.raises(ValueError, match=r"gaze\.path"):
        GazeSpec(predictor="recorded")
