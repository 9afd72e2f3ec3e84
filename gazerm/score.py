"""Scoring prompt/response pairs with a saved reward model, the way training saw them.

The model directory records how training built inputs (``inputs.json``: gaze predictor and
max_length); the scorer builds that predictor, predicts word gaze for each response and feeds
prompt + response through the same :class:`SequenceEncoder` and :func:`render_prompt` as
training, so a reward here is the reward the trained model would have given the same text in a
training batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gazerm.data.errors import DataError
from gazerm.data.loaders.common import nested, text
from gazerm.data.readers import Record, read_records, require
from gazerm.features.base import N_FEATURES
from gazerm.features.featurize import build_predictor
from gazerm.model.inputs import Sequence, SequenceEncoder
from gazerm.model.io import INPUTS_FILE, load_reward_model
from gazerm.model.reward_model import RewardModel
from gazerm.train.units import render_prompt

Context = list[dict[str, str]]


class RewardScorer:
    """A loaded reward model, its tokenizer and gaze predictor; ``score`` gives one reward per pair."""

    def __init__(self, model_dir: str | Path, batch_size: int = 16, max_length: int | None = None) -> None:
        self.model, tokenizer, config = load_reward_model(model_dir)
        path = Path(model_dir) / INPUTS_FILE
        inputs = json.loads(path.read_text()) if path.exists() else {}
        spec = inputs.get("gaze", {"predictor": "none"})
        if spec["predictor"] == "none":
            if config.fusion != "none":
                raise ValueError(
                    f"{model_dir}: the model fuses gaze (fusion={config.fusion!r}) but {INPUTS_FILE} "
                    "names no gaze predictor, so its gaze features cannot be computed"
                )
            self.predictor = None
        else:
            self.predictor = build_predictor(spec["predictor"], spec.get("path"))
        max_length = max_length or inputs.get("max_length") or _longest(self.model)
        self.encoder = SequenceEncoder(tokenizer, max_length)
        self.batch_size = batch_size

    def score(
        self,
        prompts: list[str],
        responses: list[str],
        contexts: list[Context | None] | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Rewards ``(N,)``, or ``(N, num_outputs)`` for a multi-attribute head."""
        if len(prompts) != len(responses) or (contexts is not None and len(contexts) != len(prompts)):
            raise ValueError("prompts, responses and contexts must have the same length")
        contexts = contexts if contexts is not None else [None] * len(prompts)
        rewards = []
        for start in tqdm(
            range(0, len(prompts), self.batch_size), "scoring", unit="batch", disable=not progress
        ):
            end = start + self.batch_size
            prefixes = [
                render_prompt(c, p) for c, p in zip(contexts[start:end], prompts[start:end], strict=True)
            ]
            rewards.append(self._score_batch(prefixes, responses[start:end]))
        if not rewards:
            outputs = self.model.model_config.num_outputs
            return np.zeros((0,) if outputs == 1 else (0, outputs), dtype=np.float32)
        return np.concatenate(rewards)

    @torch.no_grad()
    def _score_batch(self, prefixes: list[str], responses: list[str]) -> np.ndarray:
        if self.predictor is None:
            gaze = [(np.zeros((0, 2)), np.zeros((0, N_FEATURES))) for _ in responses]
        else:
            gaze = [(np.asarray(g.spans), g.features) for g in self.predictor.predict(responses)]
        sequences = [
            Sequence(prefix, response, spans, features)
            for prefix, response, (spans, features) in zip(prefixes, responses, gaze, strict=True)
        ]
        batch = self.encoder.pad(self.encoder.encode(sequences))
        output = self.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            gaze=batch["gaze"],
            gaze_mask=batch["gaze_mask"],
        )
        return output.rewards.numpy()


def _longest(model: RewardModel) -> int:
    """For a model directory without ``inputs.json``: the longest input the backbone can position
    (``concat`` adds up to one gaze slot per token, so half of that)."""
    positions = model.transformer.config.max_position_embeddings
    return positions // 2 if model.model_config.fusion == "concat" else positions


def score_file(
    model_dir: str | Path, input_path: str | Path, output_path: str | Path, batch_size: int = 16
) -> int:
    """Score every ``prompt``/``response`` row of a JSONL or Parquet file; writes the rows plus ``reward``
    as JSONL and returns how many. Every row is validated before the model is loaded."""
    file = str(input_path)
    records = [_checked(record, file, row) for row, record in read_records(input_path)]
    scorer = RewardScorer(model_dir, batch_size=batch_size)
    rewards = scorer.score(
        [r["prompt"] for r in records],
        [r["response"] for r in records],
        [r.get("context") for r in records],
        progress=len(records) > batch_size,
    )
    output = Path(output_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as handle:
        for record, reward in zip(records, rewards, strict=True):
            handle.write(json.dumps({**record, "reward": reward.tolist()}, ensure_ascii=False, default=str))
            handle.write("\n")
    return len(records)


def _checked(record: Record | DataError, file: str, row: int) -> Record:
    """The record, if it has a non-blank prompt and response and a well-formed optional context."""
    if isinstance(record, DataError):
        raise record
    text(record, "prompt", file, row)
    text(record, "response", file, row)
    if record.get("context") is not None:
        turns = nested(record, "context", list, file, row)
        for name in turns:
            turn = nested(turns, name, dict, file, row)
            text(turn, f"{name}.role", file, row)
            require(turn, f"{name}.content", str, file, row)
    return record
