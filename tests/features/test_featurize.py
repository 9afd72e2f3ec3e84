from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from gazerm.data.config import GazeSpec
from gazerm.data.schema import PREFERENCE_SCHEMA, PreferenceExample, examples_to_table, pairs_from_scores
from gazerm.errors import ConfigError
from gazerm.features import featurize
from gazerm.features.base import word_spans
from gazerm.features.featurize import (
    AUTO_LOCAL_ROWS,
    GazeFeaturizer,
    build_predictor,
    runs_locally,
    unused_features_problem,
)
from gazerm.features.reading_model import ReadingTimeModel
from gazerm.features.transformer import TransformerGazePredictor

RESPONSES = [
    ["Knead the dough, then bake it.", "Notwithstanding epistemological vicissitudes, bake."],
    ["", "Yes."],
    ["One.", "Two words", "Three short words"],
]


def _table() -> pa.Table:
    examples = [
        PreferenceExample(
            "test",
            "test.jsonl",
            row,
            f"Prompt {row}?",
            responses,
            "pairwise",
            pairs_from_scores(list(range(len(responses)))[::-1]),
        )
        for row, responses in enumerate(RESPONSES)
    ]
    return examples_to_table(examples)


def test_featurizer_fills_gaze_per_response_in_the_schema() -> None:
    table = GazeFeaturizer()(_table()).cast(PREFERENCE_SCHEMA)
    assert table.column("gaze_source").to_pylist() == ["reading_model-v1"] * 3
    gaze = table.column("gaze").to_pylist()
    model = ReadingTimeModel()
    for row_responses, row_gaze in zip(RESPONSES, gaze, strict=True):
        assert len(row_gaze) == len(row_responses)
        for text, stored in zip(row_responses, row_gaze, strict=True):
            expected = model.predict([text])[0]
            assert stored["word_spans"] == [list(span) for span in word_spans(text)]
            np.testing.assert_array_equal(
                np.array(stored["features"], np.float32).reshape(-1, 5), expected.features
            )
    assert gaze[1][0] == {"word_spans": [], "features": []}
    assert table.column("prompt").to_pylist() == ["Prompt 0?", "Prompt 1?", "Prompt 2?"]  # rest untouched


def test_featurizer_fills_the_prompts_word_gaze_with_the_same_predictor() -> None:
    table = GazeFeaturizer()(_table()).cast(PREFERENCE_SCHEMA)
    model = ReadingTimeModel()
    prompts, stored_gaze = table.column("prompt").to_pylist(), table.column("prompt_gaze").to_pylist()
    for prompt, stored in zip(prompts, stored_gaze, strict=True):
        assert stored["word_spans"] == [list(span) for span in word_spans(prompt)]
        np.testing.assert_array_equal(
            np.array(stored["features"], np.float32).reshape(-1, 5), model.predict([prompt])[0].features
        )
    assert _table().column("prompt_gaze").null_count == 3  # none until prepare computes it


def test_featurizer_handles_an_empty_batch() -> None:
    empty = GazeFeaturizer()(_table().slice(0, 0)).cast(PREFERENCE_SCHEMA)
    assert empty.num_rows == 0


def test_transformer_featurizer_names_its_checkpoint(constant_checkpoint: Path) -> None:
    table = GazeFeaturizer("transformer", str(constant_checkpoint))(_table()).cast(PREFERENCE_SCHEMA)
    assert table.column("gaze_source")[0].as_py() == f"transformer:{constant_checkpoint.name}"
    assert table.column("gaze")[2][0]["features"].as_py() == [pytest.approx([0.5, 0.5, 0.4, 0.375, 0.0])]


def test_build_predictor_by_name_with_clear_errors(constant_checkpoint: Path, tmp_path: Path) -> None:
    assert isinstance(build_predictor("reading_model", None), ReadingTimeModel)
    assert isinstance(build_predictor("transformer", str(constant_checkpoint)), TransformerGazePredictor)
    with pytest.raises(ValueError, match="unknown gaze predictor 'eyes'"):
        build_predictor("eyes", None)
    with pytest.raises(ValueError, match="needs path="):
        build_predictor("transformer", None)
    with pytest.raises(FileNotFoundError, match="not found"):
        build_predictor("transformer", str(tmp_path / "missing"))


def test_the_papers_predictors_are_built_by_name(
    fmv1_random: Path, t5_base: Path, fmv2_constant: Path, roberta_base: Path
) -> None:
    from gazerm.features.fmv1 import Fmv1GazePredictor
    from gazerm.features.fmv2 import Fmv2GazePredictor

    fmv1 = build_predictor("fmv1", str(fmv1_random), str(t5_base))
    assert isinstance(fmv1, Fmv1GazePredictor) and fmv1.name == f"fmv1:{fmv1_random.name}"
    fmv2 = build_predictor("fmv2", str(fmv2_constant), str(roberta_base), output_scale=1.0)
    assert isinstance(fmv2, Fmv2GazePredictor) and fmv2.name == "fmv2:constant.pth"
    assert fmv2.predict(["Bake."])[0].features[0, 3] == pytest.approx(30.0)  # the scale reached it
    for name, base in (("fmv1", "t5-small tokenizer"), ("fmv2", "roberta-base config \\+ tokenizer")):
        needs = f"{name} gaze predictor needs path=<checkpoint file> and base=<local {base}"
        with pytest.raises(ValueError, match=needs):
            build_predictor(name, str(fmv2_constant))
    table = GazeFeaturizer("fmv2", str(fmv2_constant), str(roberta_base))(_table()).cast(PREFERENCE_SCHEMA)
    assert table.column("gaze_source").to_pylist() == ["fmv2:constant.pth"] * 3
    assert table.column("gaze")[2][0]["features"].as_py() == [pytest.approx([0.02, 0.2, 0.4, 0.3, 0.0])]


def test_a_model_may_not_use_the_features_fmv1_leaves_at_zero() -> None:
    assert unused_features_problem("fmv1", [0, 0, 0, 1, 0]) is None
    assert unused_features_problem("fmv2", [1, 1, 1, 1, 1]) is None
    assert unused_features_problem("fmv1", [0, 1, 0, 1, 0]) == (
        "the fmv1 gaze predictor leaves nFix, FFD, GPT, fixProp at 0: "
        "set model.features_used=[0, 0, 0, 1, 0] (got [0, 1, 0, 1, 0])"
    )


def test_auto_featurizes_small_tables_in_process_and_large_ones_with_ray_data():
    assert runs_locally("auto", AUTO_LOCAL_ROWS - 1) and not runs_locally("auto", AUTO_LOCAL_ROWS)
    assert not runs_locally("ray", 10) and runs_locally("local", 10**9)


def test_ray_blocks_are_whole_batches_for_every_worker():
    table = pa.table({"x": list(range(1000))})
    blocks = featurize._blocks(table, batch_size=64, workers=2)
    assert [b.num_rows for b in blocks] == [256, 256, 256, 232]
    assert pa.concat_tables(blocks).equals(table)
    assert len(featurize._blocks(table.slice(0, 10), batch_size=64, workers=2)) == 1


def test_raw_negative_outputs_are_an_fmv_predictors_option_only():
    with pytest.raises(ConfigError, match="clip_negative=false applies to fmv1 and fmv2"):
        build_predictor("reading_model", clip_negative=False)
    with pytest.raises(ValidationError, match=r"takes no gaze\.clip_negative"):
        GazeSpec(predictor="reading_model", clip_negative=False)
    spec = GazeSpec(predictor="fmv2", path="m.pth", base="roberta", clip_negative=False)
    assert spec.predictor_kwargs()["clip_negative"] is False
