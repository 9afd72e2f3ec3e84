"""Choosing a gaze predictor by name, and filling a preference table's ``gaze`` column with it.

``GazeFeaturizer`` is a callable class so Ray Data can build it once per worker (the transformer
predictor loads its model in the constructor) and feed it Arrow batches; ``featurize_table`` runs it
that way or, for a small table, in this process. Each batch is one ``predict`` call over every response
of every row, which is what lets the reading model vectorise and the transformer batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from gazerm.errors import ConfigError
from gazerm.features.base import FEATURE_NAMES, GAZE_TYPE, N_FEATURES, GazePredictor, WordGaze
from gazerm.runtime import init_ray

PREDICTORS = ("reading_model", "transformer", "fmv1", "fmv2")
# The paper's predictors (eyetrackpy): a checkpoint file (``path``) plus a local base directory.
EYETRACKPY_PREDICTORS = {"fmv1": "t5-small tokenizer", "fmv2": "roberta-base config + tokenizer"}
# Measures a predictor leaves at 0; a model trained on its features must not use them.
UNPREDICTED = {"fmv1": ("nFix", "FFD", "GPT", "fixProp")}

OutputScale = float | Sequence[float] | None
GazeBackend = Literal["auto", "ray", "local"]
# Below this many rows the reading model featurizes in process faster than Ray Data starts its actors
# (1,200 quickstart rows: 1.4 s in process, 15 s through Ray Data with 2 actors on 2 cores).
AUTO_LOCAL_ROWS = 20_000


def build_predictor(
    name: str,
    path: str | None = None,
    base: str | None = None,
    output_scale: OutputScale = None,
    clip_negative: bool = True,
) -> GazePredictor:
    """The predictor called ``name``. ``transformer`` needs ``path``, a local checkpoint directory;
    ``fmv1``/``fmv2`` need ``path``, the checkpoint file eyetrackpy publishes, and ``base``, the local
    directory of the model it builds on. ``output_scale`` overrides the divisor that brings a trained
    predictor's outputs onto the common scale (each predictor's module documents its default);
    ``clip_negative=False`` passes an fmv predictor's negative outputs on, as eyetrackpy does."""
    if not clip_negative and name not in EYETRACKPY_PREDICTORS:
        raise ConfigError(f"gaze.clip_negative=false applies to fmv1 and fmv2, not the {name} predictor")
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

            return Fmv1GazePredictor(path, base, output_scale=output_scale, clip_negative=clip_negative)
        from gazerm.features.fmv2 import Fmv2GazePredictor

        return Fmv2GazePredictor(path, base, output_scale=output_scale, clip_negative=clip_negative)
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
        clip_negative: bool = True,
    ) -> None:
        self.predictor = build_predictor(predictor, path, base, output_scale, clip_negative)

    def __call__(self, batch: pa.Table) -> pa.Table:
        responses = batch.column("responses").to_pylist()
        texts = [text for row in responses for text in row]
        results = self.predictor.predict(texts + batch.column("prompt").to_pylist())  # one call for both
        gaze = gaze_column(results[: len(texts)], [len(row) for row in responses])
        prompt_gaze = _word_gaze_array(results[len(texts) :])
        source = pa.array([self.predictor.name] * batch.num_rows, pa.string())
        batch = set_column(set_column(batch, "gaze", gaze), "gaze_source", source)
        return set_column(batch, "prompt_gaze", prompt_gaze)


def runs_locally(backend: GazeBackend, rows: int) -> bool:
    """Whether ``featurize_table`` featurizes ``rows`` rows in this process rather than with Ray Data."""
    return backend == "local" or (backend == "auto" and rows < AUTO_LOCAL_ROWS)


def featurize_table(
    table: pa.Table, predictor: Mapping[str, Any], backend: GazeBackend, batch_size: int, workers: int
) -> pa.Table:
    """``table`` with its gaze columns filled by ``GazeFeaturizer(**predictor)``, batch by batch, in order:
    in this process, or by ``workers`` Ray Data actors (``runs_locally``)."""
    if runs_locally(backend, table.num_rows):
        featurize = GazeFeaturizer(**predictor)
        batches = tqdm(_batches(table, batch_size), desc="gaze features", unit=" batches", mininterval=2.0)
        return pa.concat_tables([featurize(batch) for batch in batches])

    import ray.data

    init_ray()
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    dataset = ray.data.from_arrow(_blocks(table, batch_size, workers)).map_batches(
        GazeFeaturizer,
        fn_constructor_kwargs=dict(predictor),
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=workers),
        max_restarts=0,  # a lost featurizer fails prepare (rerun it); no restart from spilled arguments
    )
    featurized = []
    with tqdm(total=table.num_rows, desc="gaze features", unit=" rows", mininterval=2.0) as progress:
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):  # blocks, in order
            featurized.append(batch)
            progress.update(batch.num_rows)
    return pa.concat_tables(featurized)


def _blocks(table: pa.Table, batch_size: int, workers: int) -> list[pa.Table]:
    """About ``workers * 2`` blocks of whole batches: Ray Data hands each featurizer actor whole blocks,
    so a table left as one block would keep every actor but one idle."""
    batches = math.ceil(table.num_rows / batch_size)
    return _batches(table, batch_size * max(1, math.ceil(batches / (workers * 2))))


def _batches(table: pa.Table, size: int) -> list[pa.Table]:
    return [table.slice(start, size) for start in range(0, table.num_rows, size)]


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
