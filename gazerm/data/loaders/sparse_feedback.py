"""The sparse-feedback study's release (Bansal et al. 2023, "Peering Through Preferences"), read as published.

GitHub ``Hritikbansal/sparse_feedback`` ships samples under ``data/``; the hub dataset
``hbXNov/sparse_feedback`` holds the full GPT-3.5-turbo feedback in the same layouts (its root CSVs and
the RM-ready train/val JSON, downloaded file by file since ``datasets`` cannot read them as they are).

* ``sparse_feedback_ratings`` — headerless CSV ``instruction, input, response, rating`` (an integer
  1-7): the rows of one prompt form a "rating" example, pairs from the ratings (higher is chosen,
  margin = difference, equal ratings give no pair). A response rated more than once appears once,
  with the mean of its ratings. Hub file: ``absolute_gpt_3.5_turbo_score.csv``.
* ``sparse_feedback_rankings`` — headerless CSV ``instruction, input, response1, response2,
  preference`` with preference ``(a)``, ``(b)`` or ``equal``: a "pairwise" example with responses
  ``[response1, response2]`` in file order; ``equal``, or two identical responses, is a ``Tie``.
  Hub file: ``relative_gpt_3.5_turbo_feedback.csv``.
* ``sparse_feedback_rm_json`` — the rankings converted for reward-model training: a JSON object
  ``{alpaca_prompt: {"sentences": [[preferred, other], ...]}}`` (the conversion drops ties). Each
  prompt is one "pairwise" example holding all its pairs; a pair of identical texts is a ``Tie``.
  Hub splits: ``train`` and ``validation`` (``sample_relative_feedback_..._with_trainval_split``).

The prompt is what the study's AI annotator was shown: the instruction, then ``"\\n\\nInput:\\n"``
and the input when there is one. The scripts write pandas' NaN for a missing input, so an input of
``nan`` (or blank) means none. The RM JSON's keys are the Alpaca template around the same two parts;
they are parsed back, so one item has one prompt in all three formats (``gazerm consistency`` matches
ratings with rankings by prompt and response text).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from statistics import fmean

from gazerm.data.errors import DataError
from gazerm.data.loaders.base import Loaded, SourceFormat, Tie, guarded, register
from gazerm.data.loaders.common import (
    group_by_prompt,
    labelled_example,
    nested,
    number,
    rating_example,
    text,
)
from gazerm.data.readers import Layout, Record, RecordOrError, require
from gazerm.data.schema import Pair, PreferenceExample

HUB_NAME = "hbXNov/sparse_feedback"
RATINGS = "sparse_feedback_ratings"
RANKINGS = "sparse_feedback_rankings"
RM_JSON = "sparse_feedback_rm_json"
MAX_RATING = 7
PREFERENCES = {"(a)": Pair(0, 1), "(b)": Pair(1, 0), "equal": None}
NO_INPUT = ("", "nan")
_PREAMBLE = (
    "Below is an instruction that describes a task{}. "
    "Write a response that appropriately completes the request.\n\n"
)
ALPACA_PROMPTS = (
    re.compile(
        re.escape(_PREAMBLE.format(", paired with an input that provides further context"))
        + r"### Instruction:\n(?P<instruction>.*)\n\n### Input:\n(?P<input>.*)\n\n### Response: ?",
        re.DOTALL,
    ),
    re.compile(
        re.escape(_PREAMBLE.format("")) + r"### Instruction:\n(?P<instruction>.*)\n\n### Response: ?",
        re.DOTALL,
    ),
)
RM_JSON_DIR = "sample_relative_feedback_gpt3.5_turbo_with_trainval_split"


def join_prompt(instruction: str, input: str) -> str:
    """The instruction, plus its input the way the study's feedback prompts append it."""
    return instruction if input.strip() in NO_INPUT else f"{instruction}\n\nInput:\n{input}"


def _prompt(record: Record, file: str, row: int) -> str:
    return join_prompt(text(record, "instruction", file, row), require(record, "input", str, file, row))


def _rating(record: Record, file: str, row: int) -> float:
    value = number(record, "rating", file, row)
    if value != int(value) or not 1 <= value <= MAX_RATING:
        raise DataError(file, row, "rating", f"expected an integer 1-{MAX_RATING}, got {record['rating']!r}")
    return value


def parse_ratings(records: Iterable[RecordOrError], file: str) -> Iterator[Loaded]:
    def read_row(record: Record, row: int) -> tuple[str, tuple[str, float]]:
        return _prompt(record, file, row), (text(record, "response", file, row), _rating(record, file, row))

    for group in group_by_prompt(records, read_row):
        if isinstance(group, DataError):
            yield group
            continue
        row, prompt, items = group
        ratings: dict[str, list[float]] = {}
        for response, rating in items:
            ratings.setdefault(response, []).append(rating)
        scores = [fmean(values) for values in ratings.values()]
        yield rating_example(RATINGS, file, row, prompt, list(ratings), scores)


def parse_rankings(records: Iterable[RecordOrError], file: str) -> Iterator[Loaded]:
    def build(record: Record, row: int) -> Iterator[PreferenceExample | Tie]:
        given = text(record, "preference", file, row)
        if given.strip() not in PREFERENCES:
            raise DataError(file, row, "preference", f"expected (a), (b) or equal, got {given!r:.60}")
        responses = [text(record, "response1", file, row), text(record, "response2", file, row)]
        prompt = _prompt(record, file, row)
        pair = PREFERENCES[given.strip()]
        if pair is None or responses[0] == responses[1]:
            yield Tie(file, row)
            return
        yield labelled_example(RANKINGS, file, row, prompt, responses, "pairwise", [pair])

    return guarded(records, file, build)


def parse_rm_json(records: Iterable[RecordOrError], file: str) -> Iterator[Loaded]:
    def build(record: Record, row: int) -> Iterator[PreferenceExample | Tie]:
        prompt = _alpaca_prompt(text(record, "prompt", file, row), file, row)
        sentences = nested(record, "sentences", list, file, row)
        if not sentences:
            raise DataError(file, row, "sentences", "no pairs")
        pairs = [_text_pair(sentences, field, file, row) for field in sentences]
        responses = list(dict.fromkeys(response for pair in pairs for response in pair))
        preferences = [Pair(responses.index(a), responses.index(b)) for a, b in pairs if a != b]
        yield from (Tie(file, row) for a, b in pairs if a == b)
        if preferences:
            yield labelled_example(RM_JSON, file, row, prompt, responses, "pairwise", preferences)

    return guarded(records, file, build)


def _alpaca_prompt(key: str, file: str, row: int) -> str:
    """The instruction and input inside an Alpaca-template key, joined as the CSV formats join them."""
    for template in ALPACA_PROMPTS:
        match = template.fullmatch(key)
        if match:
            return join_prompt(match["instruction"], match.groupdict().get("input") or "")
    raise DataError(file, row, "prompt", f"not an Alpaca instruction prompt: {key!r:.80}")


def _text_pair(sentences: Record, field: str, file: str, row: int) -> tuple[str, str]:
    pair = nested(sentences, field, list, file, row)
    if len(pair) != 2:
        raise DataError(file, row, field, f"expected [preferred, other], got {len(pair)} texts")
    preferred, other = (text(pair, name, file, row) for name in pair)
    return preferred, other


for _format in (
    SourceFormat(
        name=RATINGS,
        hub_name=HUB_NAME,
        parse=parse_ratings,
        description="headerless CSV instruction,input,response,rating (1-7); one example per prompt",
        layout=Layout(columns=("instruction", "input", "response", "rating")),
        hub_files={"train": "absolute_gpt_3.5_turbo_score.csv"},
    ),
    SourceFormat(
        name=RANKINGS,
        hub_name=HUB_NAME,
        parse=parse_rankings,
        description="headerless CSV instruction,input,response1,response2,(a)/(b)/equal → pairwise or tie",
        layout=Layout(columns=("instruction", "input", "response1", "response2", "preference")),
        hub_files={"train": "relative_gpt_3.5_turbo_feedback.csv"},
    ),
    SourceFormat(
        name=RM_JSON,
        hub_name=HUB_NAME,
        parse=parse_rm_json,
        description="JSON {alpaca_prompt: {'sentences': [[preferred, other], ...]}}; one example per prompt",
        layout=Layout(keyed_by="prompt"),
        hub_files={
            "train": f"{RM_JSON_DIR}/train_relative_feedback_for_rm.json",
            "validation": f"{RM_JSON_DIR}/val_relative_feedback_for_rm.json",
        },
    ),
):
    register(_format)
