"""Win rate of one set of best-of-n choices (A) over another (B), judged by reference preferences or an RM.

Choice files are ``gazerm rerank`` outputs or any JSONL/Parquet with ``prompt``, ``chosen`` and an
optional ``context`` and ``id``. Rows are matched by ``id`` when every row of every file has one,
else by prompt + context; a prompt that only one choice file has is an error, never dropped.

Per prompt, A wins (1), ties (0.5) or loses (0). Identical chosen texts tie. A reference file
(``prompt``, ``responses`` and either ``scores``, higher is better, or ``ranking``, indices best
first) ranks the two chosen texts, which must be among its responses; a judge reward model scores
both with :class:`~gazerm.score.RewardScorer`. The 95% confidence interval is the Wilson score
interval of the win rate with ties counted as half a win.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

from gazerm.data.errors import DataError
from gazerm.data.loaders.common import nested, number, text
from gazerm.data.readers import Record, read_records, require
from gazerm.errors import ConfigError
from gazerm.evaluate.bestofn import check_candidates, check_prompt
from gazerm.evaluate.offline import score_rows
from gazerm.model.templates import Context
from gazerm.score import RewardScorer
from gazerm.table import Table

CONFIDENCE = 0.95
INTERVAL = "Wilson score interval, ties counted half"


@dataclass(frozen=True)
class Prompted:
    """Where a row came from and the prompt it answers: what rows of different files are matched on."""

    file: str
    row: int
    id: str | int | None
    prompt: str
    context: Context | None

    def key(self, by_id: bool) -> Any:
        return self.id if by_id else (self.prompt, json.dumps(self.context, sort_keys=True))

    def label(self, by_id: bool) -> str:
        return f"id {self.id!r}" if by_id else f"prompt {self.prompt!r:.80}"


@dataclass(frozen=True)
class Choice(Prompted):
    chosen: str


@dataclass(frozen=True)
class Reference(Prompted):
    responses: list[str]
    values: list[float | None]  # higher is better; None: a response the ranking leaves out

    def value(self, choice: Choice) -> float:
        """How good the reference says ``choice.chosen`` is."""
        if choice.chosen not in self.responses:
            message = f"not among the responses of {self.file} row {self.row}"
            raise DataError(choice.file, choice.row, "chosen", message)
        index = self.responses.index(choice.chosen)
        if self.values[index] is None:
            message = f"is response {index} of {self.file} row {self.row}, which its ranking leaves out"
            raise DataError(choice.file, choice.row, "chosen", message)
        return self.values[index]


@dataclass(frozen=True)
class WinRate:
    """A's win rate over B on ``n`` prompts and its 95% confidence interval."""

    choices_a: str
    choices_b: str
    judged_by: str
    n: int
    wins: int
    ties: int
    losses: int
    win_rate: float
    ci_low: float
    ci_high: float
    interval: str = INTERVAL

    @classmethod
    def from_outcomes(
        cls, outcomes: Sequence[float], choices_a: str, choices_b: str, judged_by: str
    ) -> WinRate:
        n = len(outcomes)
        wins, ties = outcomes.count(1.0), outcomes.count(0.5)
        rate = (wins + ties / 2) / n
        low, high = wilson_interval(rate, n)
        return cls(choices_a, choices_b, judged_by, n, wins, ties, n - wins - ties, rate, low, high)

    def report(self) -> str:
        table = Table(
            ["n", "wins", "ties", "losses", "win rate", "95% CI"],
            [
                [
                    self.n,
                    self.wins,
                    self.ties,
                    self.losses,
                    self.win_rate,
                    f"[{self.ci_low:.4f}, {self.ci_high:.4f}]",
                ]
            ],
        )
        title = f"A = {self.choices_a} vs B = {self.choices_b}, judged by {self.judged_by}"
        return f"{title}\n{table.markdown()}95% CI: {self.interval}"

    def write(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


def wilson_interval(rate: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for a proportion: unlike the normal approximation it stays inside [0, 1]
    and is not zero-width at rates of 0 or 1."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    denominator = 1 + z**2 / n
    center = (rate + z**2 / (2 * n)) / denominator
    half_width = z / denominator * math.sqrt(rate * (1 - rate) / n + z**2 / (4 * n**2))
    # analytically rate is inside [low, high] ⊂ [0, 1]; the clamps keep rounding from breaking that
    return max(0.0, min(rate, center - half_width)), min(1.0, max(rate, center + half_width))


def win_rate(
    choices_a: str | Path,
    choices_b: str | Path,
    reference: str | Path | None = None,
    judge: str | Path | None = None,
    batch_size: int = 16,
) -> WinRate:
    """A's win rate over B, judged by exactly one of a ``reference`` preference file or a ``judge`` model."""
    if (reference is None) == (judge is None):
        raise ConfigError("give either a reference preference file or a judge model directory (one of them)")
    a, b = read_choices(choices_a), read_choices(choices_b)
    references = read_reference(reference) if reference is not None else []
    by_id = all(item.id is not None for item in [*a, *b, *references])
    pairs = list(zip(a, _aligned(a, b, by_id, complete=True), strict=True))
    if reference is not None:
        aligned = _aligned(a, references, by_id, complete=False)
        values = [(ref.value(x), ref.value(y)) for (x, y), ref in zip(pairs, aligned, strict=True)]
        judged_by = f"reference {reference}"
    else:
        rows = [
            {"prompt": x.prompt, "context": x.context, "responses": [x.chosen, y.chosen]} for x, y in pairs
        ]
        values = score_rows(RewardScorer(judge, batch_size=batch_size), rows)
        judged_by = f"judge {judge}"
    outcomes = [
        _outcome(x, y, value_x, value_y) for (x, y), (value_x, value_y) in zip(pairs, values, strict=True)
    ]
    return WinRate.from_outcomes(outcomes, str(choices_a), str(choices_b), judged_by)


def _outcome(a: Choice, b: Choice, value_a: float, value_b: float) -> float:
    if a.chosen == b.chosen or value_a == value_b:
        return 0.5
    return 1.0 if value_a > value_b else 0.0


def read_choices(path: str | Path) -> list[Choice]:
    """Every row's prompt and chosen text; the whole file is validated before anything is scored."""
    file = str(path)
    choices = []
    for row, record in read_records(path):
        check_prompt(record, file, row)
        choices.append(Choice(**_prompted(record, file, row), chosen=text(record, "chosen", file, row)))
    return _nonempty(choices, file)


def read_reference(path: str | Path) -> list[Reference]:
    """Reference preferences: per prompt, its responses and ``scores`` or a best-first ``ranking``."""
    file = str(path)
    references = []
    for row, record in read_records(path):
        check_candidates(record, file, row)
        values = _reference_values(record, len(record["responses"]), file, row)
        references.append(
            Reference(**_prompted(record, file, row), responses=record["responses"], values=values)
        )
    return _nonempty(references, file)


def _prompted(record: Record, file: str, row: int) -> dict[str, Any]:
    """The :class:`Prompted` fields of a checked record."""
    return {
        "file": file,
        "row": row,
        "id": record.get("id"),
        "prompt": record["prompt"],
        "context": record.get("context"),
    }


def _nonempty(items: list, file: str) -> list:
    if not items:
        raise DataError(file, None, None, "no rows")
    return items


def _reference_values(record: Record, count: int, file: str, row: int) -> list[float | None]:
    """Higher-is-better values of the responses: the scores, or minus the position in the ranking."""
    if (record.get("scores") is None) == (record.get("ranking") is None):
        raise DataError(file, row, "scores", "give either 'scores' or 'ranking' (exactly one)")
    if record.get("scores") is not None:
        scores = nested(record, "scores", list, file, row)
        if len(scores) != count:
            raise DataError(file, row, "scores", f"{len(scores)} scores for {count} responses")
        return [number(scores, name, file, row) for name in scores]
    ranking = nested(record, "ranking", list, file, row)
    values: list[float | None] = [None] * count
    for position, name in enumerate(ranking):
        index = require(ranking, name, int, file, row)
        if not 0 <= index < count:
            raise DataError(file, row, name, f"index {index} out of range for {count} responses")
        if values[index] is not None:
            raise DataError(file, row, name, f"index {index} is ranked twice")
        values[index] = -float(position)
    return values


def _aligned(anchors: list[Choice], others: list[Prompted], by_id: bool, complete: bool) -> list:
    """``others`` in the order of ``anchors``, matched by key. Each anchor must have a match; with
    ``complete``, ``others`` must have no prompt the anchors lack either."""
    anchor_keys = set(_by_key(anchors, by_id))
    indexed = _by_key(others, by_id)
    other_file = others[0].file
    for anchor in anchors:
        if anchor.key(by_id) not in indexed:
            where = f"row {anchor.row} of {anchor.file}"
            raise DataError(other_file, None, None, f"no row for {anchor.label(by_id)} ({where})")
    if complete:
        for other in others:
            if other.key(by_id) not in anchor_keys:
                message = f"no row for {other.label(by_id)} (row {other.row} of {other_file})"
                raise DataError(anchors[0].file, None, None, message)
    matched = [indexed[anchor.key(by_id)] for anchor in anchors]
    for anchor, other in zip(anchors, matched, strict=True):
        if by_id and (anchor.prompt, anchor.context) != (other.prompt, other.context):
            message = f"{anchor.label(by_id)} has another prompt or context in {anchor.file} row {anchor.row}"
            raise DataError(other.file, other.row, "prompt", message)
    return matched


def _by_key(items: list[Prompted], by_id: bool) -> dict[Any, Prompted]:
    """Items by matching key; a key seen twice in one file is an error (which row would count?)."""
    indexed: dict[Any, Prompted] = {}
    for item in items:
        first = indexed.setdefault(item.key(by_id), item)
        if first is not item:
            field = "id" if by_id else "prompt"
            raise DataError(item.file, item.row, field, f"{item.label(by_id)} repeats row {first.row}")
    return indexed
