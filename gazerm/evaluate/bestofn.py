"""Best-of-n re-ranking: keep, per prompt, the candidate response a trained reward model likes best.

Candidates are scored with :class:`~gazerm.score.RewardScorer`, so each response's gaze features
come from the predictor recorded with the model, exactly as in training. A multi-attribute head is
reduced to one reward by :func:`~gazerm.evaluate.offline.scalar_rewards`. On a tie the lowest index
wins, so re-running gives the same choice and the order of the candidates is the tie-breaker.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from gazerm.data.errors import DataError
from gazerm.data.loaders.common import nested, text
from gazerm.data.readers import Record, read_records, require
from gazerm.evaluate.offline import check_weights, score_rows
from gazerm.score import RewardScorer, check_context


def check_prompt(record: Record | DataError, file: str, row: int) -> Record:
    """The record, if it has a non-blank prompt, a well-formed optional context and a str/int ``id``."""
    if isinstance(record, DataError):
        raise record
    text(record, "prompt", file, row)
    check_context(record, file, row)
    if record.get("id") is not None:
        require(record, "id", (str, int), file, row)
    return record


def check_candidates(record: Record | DataError, file: str, row: int) -> Record:
    """:func:`check_prompt`, plus a non-empty ``responses`` list of non-blank strings."""
    check_prompt(record, file, row)
    responses = nested(record, "responses", list, file, row)
    if not responses:
        raise DataError(file, row, "responses", "empty list: there is nothing to choose from")
    for name in responses:
        text(responses, name, file, row)
    return record


def rerank_file(
    model_dir: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    batch_size: int = 16,
    weights: Sequence[float] | None = None,
) -> int:
    """Write each input row plus ``rewards``, ``chosen_index`` and ``chosen`` as JSONL; returns the row count.

    Every row is validated before the model is loaded, and the weights are checked against the
    model's head before any response is scored.
    """
    file = str(input_path)
    records = [check_candidates(record, file, row) for row, record in read_records(input_path)]
    scorer = RewardScorer(model_dir, batch_size=batch_size)
    check_weights(scorer.model.model_config.num_outputs, weights)  # before any response is scored
    candidates = [
        {"prompt": r["prompt"], "responses": r["responses"], "context": r.get("context")} for r in records
    ]
    rewards = score_rows(scorer, candidates, weights)
    output = Path(output_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as handle:
        for record, reward in zip(records, rewards, strict=True):
            best = int(reward.argmax())  # argmax returns the first maximum: ties go to the lowest index
            chosen = {"rewards": reward.tolist(), "chosen_index": best, "chosen": record["responses"][best]}
            handle.write(json.dumps({**record, **chosen}, ensure_ascii=False, default=str) + "\n")
    return len(records)
