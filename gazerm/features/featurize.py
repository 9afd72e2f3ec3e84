"""Choosing a gaze predictor by name, and filling a preference table's ``gaze`` column with it.

``GazeFeaturizer`` is a callable class so Ray Data can build it once per worker (the transformer
predictor loads its model in the constructor) and feed it Arrow batches; ``gazerm prepare`` also
calls it directly for the local backend. Each batch is one ``predict`` call over every response
of every row, which is what lets the reading model vectorise and the transformer batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from gazerm.errors import ConfigError
from gazerm.features.base import FEATURE_NAMES, GAZE_TYPE, N_FEATURES, GazePredictor, WordGaze

PREDICTORS = ("reading_model", "transformer", "fmv1", "fmv2")
# The paper's predictors (eyetrackpy): a checkpoint file (``path``) plus a local base directory.
EYETRACKPY_PREDICTORS = {"fmv1": "t5-small tokenizer", "fmv2": "roberta-base config + tokenizer"}
# Measures a predictor leaves at 0; a model trained on its features must not use them.
UNPREDICTED = {"fmv1": ("nFix", "FFD", "GPT", "fixProp")}

OutputScale = float | Sequence[float] | None


def build_predictor(
    name: str, path: str | None = None, base: str | None = None, output_scale: OutputScale = None
) -> GazePredictor:
    """The predictor called ``name``. ``transformer`` needs ``path``, a local checkpoint directory;
    ``fmv1``/``fmv2`` need ``path``, the checkpoint file eyetrackpy publishes, and ``base``, the local
    directory of the model it builds on. ``output_scale`` overrides the divisor that brings a trained
    predictor's outputs onto the common scale (each predictor's module documents its default)."""
    if name == "reading_model":
        from gazerm.features.reading_model import ReadingTimeModel

        return ReadingTimeModel()
    if name == "transformer":
        if not path:
            raise ConfigError("the transformer gaze predictor needs path=<local checkpoint directory>")
        from gazerm.features.transformer import TransformerGazePredictor

        return TransformerGazePredictor(path, output_scale=output_scale)
    if name in EYETRACKPY_PREDICTORS:
        if not path or not base:
            raise ConfigError(
                f"the {name} gaze predictor needs path=<checkpoint file> and "
                f"base=<local {EYETRACKPY_PREDICTORS[name]} directory>"
            )
        if name == "fmv1":
            from gazerm.features.fmv1 import Fmv1GazePredictor

            return Fmv1GazePredictor(path, base, output_scale=output_scale)
        from gazerm.features.fmv2 import Fmv2GazePredictor

        return Fmv2GazePredictor(path, base, output_scale=output_scale)
    raise ConfigError(f"unknown gaze predictor {name!r}; choose one of {PREDICTORS}")


def unused_features_problem(predictor: str, features_used: Sequence[int]) -> str | None:
    """Why a model may not use ``features_used`` with gaze from ``predictor`` (a feature it leaves at 0),
    or None."""
    zero = [FEATURE_NAMES.index(feature) for feature in UNPREDICTED.get(predictor, ())]
    if not any(features_used[i] for i in zero):
        return None
    only = [int(i not in zero) for i in range(N_FEATURES)]
    return (
        f"the {predictor} gaze predictor leaves {', '.join(FEATURE_NAMES[i] for i in zero)} at 0: "
        f"set model.features_used={only} (got {list(features_used)})"
    )


class GazeFeaturizer:
    """``table → table`` with ``gaze`` (per response: word spans and features), ``prompt_gaze`` (the same
    for the prompt) and ``gaze_source`` set."""

    def __init__(
        self,
        predictor: str = "reading_model",
        path: str | None = None,
        base: str | None = None,
        output_scale: OutputScale = None,
    ) -> None:
        self.predictor = build_predictor(predictor, path, base, output_scale)

    def __call__(self, batch: pa.Table) -> pa.Table:
        responses = batch.column("responses").to_pylist()
        texts = [text for row in responses for text in row]
        results = self.predictor.predict(texts + batch.column("prompt").to_pylist())  # one call for both
        gaze = gaze_column(results[: len(texts)], [len(row) for row in responses])
        prompt_gaze = _word_gaze_array(results[len(texts) :])
        source = pa.array([self.predictor.name] * batch.num_rows, pa.string())
        batch = set_column(set_column(batch, "gaze", gaze), "gaze_source", source)
        return set_column(batch, "prompt_gaze", prompt_gaze)


def gaze_column(results: list[WordGaze], responses_per_row: list[int]) -> pa.Array:
    """``list<GAZE_TYPE>`` built from flat numpy buffers, without a Python object per word; ``results``
    are every row's responses in order, ``responses_per_row`` how many each row has."""
    return pa.ListArray.from_arrays(_offsets(responses_per_row), _word_gaze_array(results))


def _word_gaze_array(results: list[WordGaze]) -> pa.StructArray:
    """One ``GAZE_TYPE`` value per text."""
    words_per_text = [len(r.spans) for r in results]
    spans = np.array([span for r in results for span in r.spans], dtype=np.int32).reshape(-1, 2)
    features = np.concatenate([r.features for r in results]) if results else np.zeros((0, N_FEATURES))
    span_field, feature_field = GAZE_TYPE[0], GAZE_TYPE[1]
    return pa.StructArray.from_arrays(
        [
            pa.ListArray.from_arrays(_offsets(words_per_text), _fixed(spans, span_field.type.value_type)),
            pa.ListArray.from_arrays(
                _offsets(words_per_text), _fixed(features, feature_field.type.value_type)
            ),
        ],
        fields=[span_field, feature_field],
    )


def _fixed(values: np.ndarray, list_type: pa.DataType) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(values).reshape(-1), list_type.value_type)
    return pa.FixedSizeListArray.from_arrays(flat, list_type.list_size)


def _offsets(counts: list[int]) -> pa.Array:
    return pa.array(np.concatenate([[0], np.cumsum(counts, dtype=np.int32)]).astype(np.int32))


def set_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    index = table.schema.get_field_index(name)
    if index < 0:
        return table.append_column(name, values)
    return table.set_column(index, pa.field(name, values.type), values)
