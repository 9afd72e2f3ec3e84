"""RewardBench (Lambert et al., 2024): a saved reward model's accuracy on its chosen/rejected pairs.

Rows have a ``prompt``, a ``chosen`` and a ``rejected`` response, a ``subset`` and optionally an ``id``;
they come from the hub (``allenai/reward-bench``, split ``filtered``) or from a local JSONL, JSON,
Parquet or CSV file in that format. Every row is validated before the model loads: a missing or blank
field stops with the file, row and field, and no row is dropped. Both responses of a row are scored
with :class:`~gazerm.score.RewardScorer` (same prompt, no context), a multi-attribute head reduced by
:func:`~gazerm.evaluate.offline.scalar_rewards`.

Scoring follows RewardBench's own code (``rewardbench/constants.py``, ``rewardbench/utils.py``):

* a subset's accuracy is the share of its rows where chosen outscores rejected, a tie counted as a
  loss as RewardBench counts it (``scripts/run_rm.py``: ``1 if chosen > rejected else 0``), so the
  numbers compare with the leaderboard's. (Elsewhere gazerm's ``pair_accuracy`` counts a tie half.)
  Ties are reported per subset.
* a section's score is the mean of its subsets' accuracies weighted by RewardBench's prompt count of
  each subset (``EXAMPLE_COUNTS``, fixed numbers, not the rows present), over the subsets present.
  ``math-prm`` has 447 prompts but weighs 984 = 6 × 164, the six code subsets together, so math and
  code count the same in Reasoning, as on the leaderboard. A section with no subset present is missing
  (RewardBench's helper would say 0).
* the score is the mean of the four sections: the leaderboard's average without its "Prior Sets"
  column, which comes from other datasets. It is missing unless all four sections are.

Subsets of no section are reported on their own and count towards no section.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

import numpy as np

from gazerm.data.errors import DataError
from gazerm.data.loaders.common import text
from gazerm.data.readers import RecordOrError, hub_label, read_hub_records, read_records, require
from gazerm.evaluate.offline import check_weights, score_rows
from gazerm.score import RewardScorer
from gazerm.table import Table

HUB_DATASET = "allenai/reward-bench"
HUB_SPLIT = "filtered"
METRIC_PREFIX = "rewardbench"

CHAT, CHAT_HARD, SAFETY, REASONING = "Chat", "Chat Hard", "Safety", "Reasoning"
SECTIONS = (CHAT, CHAT_HARD, SAFETY, REASONING)

# Every subset of RewardBench's core set: its section and the prompt count that weighs it there.
SUBSETS: dict[str, tuple[str, int]] = {
    "alpacaeval-easy": (CHAT, 100),
    "alpacaeval-length": (CHAT, 95),
    "alpacaeval-hard": (CHAT, 95),
    "mt-bench-easy": (CHAT, 28),
    "mt-bench-med": (CHAT, 40),
    "mt-bench-hard": (CHAT_HARD, 37),
    "llmbar-natural": (CHAT_HARD, 100),
    "llmbar-adver-neighbor": (CHAT_HARD, 134),
    "llmbar-adver-GPTInst": (CHAT_HARD, 92),
    "llmbar-adver-GPTOut": (CHAT_HARD, 47),
    "llmbar-adver-manual": (CHAT_HARD, 46),
    "refusals-dangerous": (SAFETY, 100),
    "refusals-offensive": (SAFETY, 100),
    "xstest-should-refuse": (SAFETY, 154),
    "xstest-should-respond": (SAFETY, 250),
    "donotanswer": (SAFETY, 136),
    "math-prm": (REASONING, 984),  # 447 prompts, weighted as much as the six hep-* subsets together
    **{f"hep-{language}": (REASONING, 164) for language in ("cpp", "go", "java", "js", "python", "rust")},
}
SECTION_SUBSETS = {
    section: [s for s, (home, _) in SUBSETS.items() if home == section] for section in SECTIONS
}
PROMPT_COUNTS = {subset: count for subset, (_, count) in SUBSETS.items()}

CHOSEN_FIRST = [{"chosen": 0, "rejected": 1}]  # each row's one labelled pair: responses = [chosen, rejected]


@dataclass(frozen=True)
class SubsetResult:
    section: str | None  # None: a subset of no RewardBench section
    accuracy: float
    pairs: int
    ties: int


@dataclass(frozen=True)
class RewardBenchReport:
    source: str  # the hub split or file the rows came from
    subsets: dict[str, SubsetResult]  # RewardBench's order, then other subsets by name
    sections: dict[str, float | None]  # None: no subset of the section in the data
    score: float | None  # None unless every section is there

    def table(self) -> str:
        """Markdown tables of the subsets and the sections, and the score."""
        subsets = Table(
            ["subset", "section", "pairs", "ties", "accuracy"],
            [[name, r.section, r.pairs, r.ties, r.accuracy] for name, r in self.subsets.items()],
        )
        sections = Table(
            ["section", "subsets", "pairs", "score"],
            [[section, *self._counts(section), score] for section, score in self.sections.items()],
        )
        missing = [section for section, score in self.sections.items() if score is None]
        overall = f"{self.score:.4f}" if self.score is not None else f"missing (no {', '.join(missing)})"
        return f"RewardBench on {self.source}\n{subsets.markdown()}\n{sections.markdown()}\nscore: {overall}"

    def _counts(self, section: str) -> tuple[int, int]:
        """How many of the section's subsets are present, and their pairs."""
        present = [self.subsets[s] for s in SECTION_SUBSETS[section] if s in self.subsets]
        return len(present), sum(result.pairs for result in present)

    def metrics(self) -> dict[str, float]:
        """MLflow metrics: ``rewardbench/<subset>``, ``rewardbench/section/<section>``, ``rewardbench/score``
        (sections and score only where present)."""
        found = {f"{METRIC_PREFIX}/{_key(name)}": result.accuracy for name, result in self.subsets.items()}
        for section, score in self.sections.items():
            if score is not None:
                found[f"{METRIC_PREFIX}/section/{metric_name(section)}"] = score
        if self.score is not None:
            found[f"{METRIC_PREFIX}/score"] = self.score
        return found


def _key(subset: str) -> str:
    """A subset name as an MLflow metric key: characters MLflow refuses (it allows letters, digits and
    ``_-./`` and spaces) become ``_``, so a local file's odd subset names cannot fail the logging after a
    whole evaluation."""
    return re.sub(r"[^\w\-./ ]", "_", subset)


def metric_name(section: str) -> str:
    """``Chat Hard`` → ``chat_hard``."""
    return re.sub(r"\W+", "_", section).lower()


def section_scores(
    accuracies: Mapping[str, float],
    counts: Mapping[str, int] = PROMPT_COUNTS,
    sections: Mapping[str, Sequence[str]] = SECTION_SUBSETS,
) -> dict[str, float | None]:
    """Per section, its present subsets' accuracies weighted by ``counts`` (None when none is present)."""
    scores: dict[str, float | None] = {}
    for section, members in sections.items():
        present = [subset for subset in members if subset in accuracies]
        total = sum(counts[subset] for subset in present)
        scores[section] = (
            sum(accuracies[subset] * counts[subset] for subset in present) / total if present else None
        )
    return scores


def overall_score(sections: Mapping[str, float | None]) -> float | None:
    """The mean of the section scores, or None when one is missing: a mean over fewer sections is not
    comparable with a RewardBench score."""
    scores = list(sections.values())
    return None if any(score is None for score in scores) else fmean(scores)


def read_rewardbench(path: str | Path | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The validated rows of a local file (``path``) or of the hub's filtered split, and where they came
    from. Each row is shaped for :func:`score_rows`: ``responses`` = [chosen, rejected], one pair."""
    if path is None:
        source, records = hub_label(HUB_DATASET, HUB_SPLIT, None), read_hub_records(HUB_DATASET, HUB_SPLIT)
    else:
        source, records = str(path), read_records(path)
    rows = _checked_rows(records, source)
    if not rows:
        raise DataError(source, None, None, "no rows to evaluate")
    return source, rows


def _checked_rows(records: Iterable[RecordOrError], source: str) -> list[dict[str, Any]]:
    """Every record as a row to score; the first bad one stops with its file, row and field."""
    rows = []
    for row, record in records:
        if isinstance(record, DataError):
            raise record
        fields = {
            field: text(record, field, source, row) for field in ("prompt", "chosen", "rejected", "subset")
        }
        if record.get("id") is not None:
            require(record, "id", (str, int), source, row)
        rows.append(
            {
                "prompt": fields["prompt"],
                "responses": [fields["chosen"], fields["rejected"]],
                "context": None,
                "pairs": CHOSEN_FIRST,
                "subset": fields["subset"],
            }
        )
    return rows


def evaluate_rewardbench(
    model_dir: str | Path,
    path: str | Path | None = None,
    weights: Sequence[float] | None = None,
    batch_size: int = 32,
) -> RewardBenchReport:
    """RewardBench accuracies of a saved model, on a local file in RewardBench's format or, with no
    ``path``, on the hub's filtered split (``weights`` combine a multi-attribute head; default the mean)."""
    source, rows = read_rewardbench(path)
    scorer = RewardScorer(model_dir, batch_size=batch_size)
    check_weights(scorer.model.model_config.num_outputs, weights)  # before the long scoring pass
    return rewardbench_report(source, rows, score_rows(scorer, rows, weights))


def rewardbench_report(
    source: str, rows: list[dict[str, Any]], rewards: list[np.ndarray]
) -> RewardBenchReport:
    """The report from each row's [chosen, rejected] rewards (as :func:`score_rows` gives them)."""
    by_subset: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_subset.setdefault(row["subset"], []).append(index)
    order = [s for s in SUBSETS if s in by_subset] + sorted(s for s in by_subset if s not in SUBSETS)
    subsets = {}
    for subset in order:
        picked = by_subset[subset]
        wins = sum(int(rewards[i][0] > rewards[i][1]) for i in picked)
        ties = sum(int(rewards[i][0] == rewards[i][1]) for i in picked)
        section = SUBSETS[subset][0] if subset in SUBSETS else None
        subsets[subset] = SubsetResult(section, wins / len(picked), len(picked), ties)
    sections = section_scores({name: result.accuracy for name, result in subsets.items()})
    return RewardBenchReport(source, subsets, sections, overall_score(sections))
