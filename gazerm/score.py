"""Scoring prompt/response pairs with a saved reward model, the way training saw them.

The model directory records how training built inputs (``inputs.json``: gaze predictor, max_length
and prompt template); the scorer builds that predictor, predicts word gaze for each response (and, for
the ``reference`` gaze layout, for each prompt, as ``prepare`` did) and feeds prompt + response through
the same input pipeline (``gazerm.model.pipeline``: encoder and prompt template) as training, so a
reward here is the reward the trained model would have given the same text in a training batch.

Two ways to run it: :func:`score_file` scores one file in this process; :func:`score_dataset` is a
Ray Data job over a directory of Parquet (or JSONL) files with one model copy per worker actor, for
more rows than one process gets through.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from gazerm.data.errors import DataError
from gazerm.data.loaders.common import nested, text
from gazerm.data.readers import Record, read_records, require
from gazerm.errors import ConfigError
from gazerm.features.base import N_FEATURES, WordGaze
from gazerm.features.featurize import build_predictor
from gazerm.model.inputs import INPUTS_FILE, InputSpec, PromptResponse, SequenceEncoder
from gazerm.model.io import load_reward_model
from gazerm.model.manifest import verify_model_dir
from gazerm.model.pipeline import InputPipeline
from gazerm.model.templates import Context
from gazerm.runtime import init_ray
from gazerm.storage import is_object_store, open_atomic, staged_dir

# Gaze a dataset brought with it rather than a predictor's: prepare's gaze.predictor recorded (a fixation
# table) and source (a release's own recordings, IFLLM's webcam gaze).
RECORDED_GAZE = ("recorded", "source")


class RewardScorer:
    """A loaded reward model, its tokenizer and gaze predictor; ``score`` gives one reward per pair."""

    def __init__(
        self, model_dir: str | Path, batch_size: int = 16, max_length: int | None = None, device: str = "cpu"
    ) -> None:
        self.model, tokenizer, config = load_reward_model(model_dir)
        self.device = torch.device(device)
        self.model.to(self.device)
        inputs = InputSpec.read(model_dir)
        spec = inputs.gaze
        # A model that fuses an eye-tracking study's gaze (a fixation table, or a release's own recordings)
        # has no predictor: each response brings its own. Without fusion that gaze never reached it.
        recorded = spec["predictor"] in RECORDED_GAZE
        self.recorded_only = recorded and config.fusion != "none"
        if spec["predictor"] == "none" or recorded:
            if config.fusion != "none" and not self.recorded_only:
                raise ConfigError(
                    f"{model_dir}: the model fuses gaze (fusion={config.fusion!r}) but {INPUTS_FILE} "
                    "names no gaze predictor, so its gaze features cannot be computed"
                )
            self.predictor = None
        else:
            self.predictor = build_predictor(
                spec["predictor"],
                spec.get("path"),
                spec.get("base"),
                spec.get("output_scale"),
                spec.get("clip_negative", True),
            )
        if max_length:
            inputs = replace(inputs, max_length=max_length)
        self.pipeline = InputPipeline.from_spec(inputs, tokenizer, config)
        self.batch_size = batch_size

    @property
    def encoder(self) -> SequenceEncoder:
        return self.pipeline.encoder

    def score(
        self,
        prompts: list[str],
        responses: list[str],
        contexts: list[Context] | None = None,
        progress: bool = False,
        implicit: list[list[float] | None] | None = None,
        gaze: list[WordGaze | None] | None = None,
    ) -> np.ndarray:
        """Rewards ``(N,)``, or ``(N, num_outputs)`` for a multi-attribute head. ``implicit`` holds each
        response's behaviour features (None where it has none), for models with ``implicit_features``;
        ``gaze`` each response's recorded word gaze (None: the model's predictor computes it), e.g. from
        :func:`gazerm.features.recorded.gaze_from_fixations`. A model of the ``reference`` gaze layout
        also reads the prompt's gaze: predicted with the response's, none beside a recorded response
        (a recording covers the response only)."""
        optional = (contexts, implicit, gaze)
        lengths = {len(prompts), len(responses)} | {len(v) for v in optional if v is not None}
        if len(lengths) > 1:
            raise ValueError("prompts, responses, contexts, implicit and gaze must have the same length")
        if gaze is not None and self.model.projector is None and any(g is not None for g in gaze):
            raise ValueError("recorded gaze was given, but this model does not use gaze (fusion 'none')")
        contexts = contexts if contexts is not None else [None] * len(prompts)
        implicit = implicit if implicit is not None else [None] * len(prompts)
        gaze = gaze if gaze is not None else [None] * len(prompts)
        rewards = []
        for start in tqdm(
            range(0, len(prompts), self.batch_size), "scoring", unit="batch", disable=not progress
        ):
            end = start + self.batch_size
            rewards.append(
                self._score_batch(
                    contexts[start:end],
                    prompts[start:end],
                    responses[start:end],
                    implicit[start:end],
                    gaze[start:end],
                )
            )
        if not rewards:
            outputs = self.model.model_config.num_outputs
            return np.zeros((0,) if outputs == 1 else (0, outputs), dtype=np.float32)
        return np.concatenate(rewards)

    @torch.no_grad()
    def _score_batch(
        self,
        contexts: list[Context],
        prompts: list[str],
        responses: list[str],
        implicit: list[list[float] | None],
        recorded: list[WordGaze | None],
    ) -> np.ndarray:
        response_gaze, prompt_gaze = self._word_gaze(prompts, responses, recorded)
        sequences, rendered = [], {}  # rows sharing a context and prompt (a request's) render it once
        for context, prompt, response, (spans, features), words, behaviour in zip(
            contexts, prompts, responses, response_gaze, prompt_gaze, implicit, strict=True
        ):
            if words is None:
                key = (id(context), prompt)
                if key not in rendered:
                    rendered[key] = self.encoder.prefix(context, prompt)
                prefix, placed = rendered[key]
            else:
                prefix, placed = self.encoder.prefix(context, prompt, *_arrays(words))
            behaviour = np.asarray(behaviour or [], dtype=np.float32)
            sequences.append(PromptResponse(prefix, response, spans, features, behaviour, placed))
        inputs = self.pipeline.inputs(sequences).to(self.device)
        return self.model(**inputs.forward_kwargs()).rewards.float().cpu().numpy()

    def _word_gaze(
        self, prompts: list[str], responses: list[str], recorded: list[WordGaze | None]
    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[WordGaze | None]]:
        """(spans, features) per response: the recorded gaze where there is one, else the predictor's;
        empty for a model without gaze. And per prompt its predicted gaze where the model gazes the prompt
        and the response's gaze is predicted, else None. One ``predict`` call for all of them."""
        if self.model.projector is None:
            empty = (np.zeros((0, 2)), np.zeros((0, N_FEATURES)))
            return [empty for _ in responses], [None] * len(prompts)
        missing = [response for response, given in zip(responses, recorded, strict=True) if given is None]
        if missing and self.recorded_only:
            raise ValueError(
                f"this model learnt from recorded gaze, which {len(missing)} response(s) lack: pass each "
                "response's recorded gaze (gaze=..., e.g. from gazerm.features.recorded.gaze_from_fixations)"
            )
        wanted = [p for p, given in zip(prompts, recorded, strict=True) if given is None]
        # recorded gaze comes without the prompt's: a model trained on it saw none there
        unique = list(dict.fromkeys(wanted)) if self.encoder.prompt_gaze and not self.recorded_only else []
        predicted = self.predictor.predict(missing + unique) if missing or unique else []
        by_prompt = dict(zip(unique, predicted[len(missing) :], strict=True))
        responses_predicted = iter(predicted[: len(missing)])
        response_gaze = [
            (np.asarray(g.spans), g.features)
            for g in (given if given is not None else next(responses_predicted) for given in recorded)
        ]
        prompt_gaze = [
            by_prompt.get(p) if given is None else None for p, given in zip(prompts, recorded, strict=True)
        ]
        return response_gaze, prompt_gaze


def _arrays(words: WordGaze | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    return (None, None) if words is None else (np.asarray(words.spans), words.features)


def score_file(
    model_dir: str | Path, input_path: str | Path, output_path: str | Path, batch_size: int = 16
) -> int:
    """Score every ``prompt``/``response`` row of a JSONL or Parquet file; writes the rows plus ``reward``
    as JSONL (atomically: all rows or the file as it was) and returns how many. Every row is validated
    before the model is loaded."""
    records = _validated(input_path)
    scorer = RewardScorer(model_dir, batch_size=batch_size)
    rewards = scorer.score(
        [r["prompt"] for r in records],
        [r["response"] for r in records],
        [r.get("context") for r in records],
        progress=len(records) > batch_size,
    )
    with open_atomic(output_path) as handle:  # a reader never sees part of the rows
        for record, reward in zip(records, rewards, strict=True):
            handle.write(json.dumps({**record, "reward": reward.tolist()}, ensure_ascii=False, default=str))
            handle.write("\n")
    return len(records)


def _validated(input_path: str | Path) -> list[Record]:
    """Every record of a file, checked by :func:`_checked`: the first bad one stops with its error."""
    file = str(input_path)
    return [_checked(record, file, row) for row, record in read_records(input_path)]


def _checked(record: Record | DataError, file: str, row: int) -> Record:
    """The record, if it has a non-blank prompt and response and a well-formed optional context."""
    if isinstance(record, DataError):
        raise record
    text(record, "prompt", file, row)
    text(record, "response", file, row)
    check_context(record, file, row)
    return record


def check_context(record: Record, file: str, row: int) -> None:
    """An optional ``context`` must be a list of ``{role, content}`` turns with a non-blank role."""
    if record.get("context") is not None:
        turns = nested(record, "context", list, file, row)
        for name in turns:
            turn = nested(turns, name, dict, file, row)
            text(turn, f"{name}.role", file, row)
            require(turn, f"{name}.content", str, file, row)


RAY_FORMATS = (".parquet", ".jsonl")


def score_dataset(
    model_dir: str | Path,
    input_path: str | Path,
    output_dir: str | Path,
    batch_size: int = 16,
    num_workers: int = 1,
    use_gpu: bool = False,
) -> int:
    """Score a Parquet (or JSONL) file or directory of them as a Ray Data job; returns the row count.

    Each of ``num_workers`` actors loads the model once (one GPU each with ``use_gpu``) and scores
    the batches it is handed; ``output_dir`` gets Parquet files with the input columns plus ``reward``
    (replacing earlier output there; a local ``output_dir`` is written beside it and renamed into place,
    so it never holds part of a job's files). Every row is validated on the driver first, with the same
    errors as :func:`score_file`, so a bad row stops the job before any worker starts.
    """
    files = input_files(input_path)
    checking = tqdm(files, "validating", unit="file", disable=len(files) < 2)
    rows = sum(len(_validated(file)) for file in checking)
    verify_model_dir(model_dir)  # before any worker starts

    import ray.data

    init_ray()
    ray.data.DataContext.get_current().enable_progress_bars = sys.stderr.isatty()
    parquet = files[0].endswith(".parquet")
    dataset = ray.data.read_parquet(files) if parquet else ray.data.read_json(files, lines=True)
    scored = dataset.map_batches(
        BatchScorer,
        fn_constructor_args=(str(model_dir), batch_size, "cuda" if use_gpu else "cpu"),
        batch_size=batch_size,
        batch_format="pyarrow",
        concurrency=num_workers,
        num_gpus=1 if use_gpu else None,
    )
    if is_object_store(output_dir):
        scored.write_parquet(str(output_dir), mode=ray.data.SaveMode.OVERWRITE)
        return rows
    with staged_dir(Path(output_dir).resolve()) as staging:
        scored.write_parquet(str(staging), mode=ray.data.SaveMode.OVERWRITE)
    return rows


def input_files(input_path: str | Path) -> list[str]:
    """The input file, or the ``.parquet`` or ``.jsonl`` files under a directory (one kind, sorted)."""
    path = Path(input_path)
    files = sorted(p for p in path.rglob("*") if p.suffix in RAY_FORMATS) if path.is_dir() else [path]
    kinds = {file.suffix for file in files}
    if len(kinds) != 1 or not kinds <= set(RAY_FORMATS):
        found = ", ".join(sorted(kinds)) or "none"
        raise DataError(str(path), None, None, f"expected .parquet or .jsonl files of one kind, got: {found}")
    return [str(file) for file in files]


class BatchScorer:
    """``map_batches`` callable: a model loaded once per Ray actor, adding ``reward`` to each Arrow batch."""

    def __init__(self, model_dir: str, batch_size: int, device: str) -> None:
        self.scorer = RewardScorer(model_dir, batch_size=batch_size, device=device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        contexts = batch.column("context").to_pylist() if "context" in batch.column_names else None
        rewards = self.scorer.score(
            batch.column("prompt").to_pylist(), batch.column("response").to_pylist(), contexts
        )
        kind = pa.float32() if rewards.ndim == 1 else pa.list_(pa.float32(), rewards.shape[1])
        return batch.append_column("reward", pa.array(rewards.tolist(), type=kind))
