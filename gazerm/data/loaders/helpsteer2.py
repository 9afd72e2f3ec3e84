"""NVIDIA HelpSteer2: one row per (prompt, response) with five 0-4 attribute ratings.

All rows of a prompt (consecutive or not) are read together; ``pairing`` decides what they give.

``pairing: all`` (the default): one "rating" example per prompt. ``scores`` is the helpfulness of
each response, ``attribute_names``/``attribute_scores`` keep all five attributes. Pairs follow
helpfulness, the attribute HelpSteer2 recommends for preference training: the more helpful response
is chosen, the margin is the helpfulness difference, and equal helpfulness gives no pair. A prompt
with a single response still gives a rating example, without pairs.

``pairing: reference``: the pairs of the "Seeing Eye to AI" reference code
(``_preprocess_HelpSteer2_split`` in ``rlhf_rw/reward_utils/dataset_proceser_reward.py``): per
prompt only the two most helpful responses, the more helpful one chosen, the other rejected; a
prompt whose two most helpful responses are equally helpful, or that has a single response, gives no
example (a ``Tie``, counted by ``prepare``). Only helpfulness is compared; the other four attributes
are kept on the example, not used. Among responses of equal helpfulness the one read first ranks
first: what the reference's pandas sort (descending, ``quicksort``) does with numpy 1.26 on
arrays this small (insertion sort, stable); numpy's AVX-512 argsort may order such ties otherwise,
so on such machines the reference may pick another response of the same helpfulness as rejected. The
example holds the two responses, chosen first, with their helpfulness as ``scores`` and the pair's
margin as their difference (the reference trains without a margin; gazerm uses it only with
``loss.use_margin``).

The example's row is its prompt's first input row; errors name the input row they come from, and a
bad row is reported and left out of its prompt's responses.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Literal

from gazerm.data.errors import DataError
from gazerm.data.loaders.base import Loaded, SourceFormat, Tie, register
from gazerm.data.loaders.common import group_by_prompt, number, rating_example, text
from gazerm.data.readers import Record, RecordOrError

log = logging.getLogger(__name__)

NAME = "helpsteer2"
ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
HELPFULNESS = ATTRIBUTES.index("helpfulness")
MAX_RATING = 4

Pairing = Literal["all", "reference"]


def _rating(record: Record, field: str, file: str, row: int) -> float:
    value = number(record, field, file, row)
    if value != int(value) or not 0 <= value <= MAX_RATING:
        raise DataError(file, row, field, f"expected an integer 0-{MAX_RATING}, got {record[field]!r}")
    return value


def parse(records: Iterable[RecordOrError], file: str, *, pairing: Pairing = "all") -> Iterator[Loaded]:
    def read_row(record: Record, row: int) -> tuple[str, tuple[str, list[float]]]:
        ratings = [_rating(record, attribute, file, row) for attribute in ATTRIBUTES]
        return text(record, "prompt", file, row), (text(record, "response", file, row), ratings)

    left_out: Counter[str] = Counter()
    for group in group_by_prompt(records, read_row):
        if isinstance(group, DataError):
            yield group
            continue
        row, prompt, items = group
        if pairing == "reference":
            # sorted() is stable: among equal helpfulness the response read first stays first
            items = sorted(items, key=lambda item: -item[1][HELPFULNESS])[:2]
            if len(items) < 2 or items[0][1][HELPFULNESS] == items[1][1][HELPFULNESS]:
                left_out["a single response" if len(items) < 2 else "top two equally helpful"] += 1
                yield Tie(file, row)
                continue
        yield rating_example(
            NAME,
            file,
            row,
            prompt,
            responses=[response for response, _ in items],
            scores=[ratings[HELPFULNESS] for _, ratings in items],
            attribute_names=list(ATTRIBUTES),
            attribute_scores=[ratings for _, ratings in items],
        )
    if left_out:
        log.info("%s: prompts without a reference pair: %s", file, dict(left_out))


register(
    SourceFormat(
        name=NAME,
        hub_name="nvidia/HelpSteer2",
        parse=parse,
        description="prompt/response rows with 0-4 ratings of five attributes (helpfulness first)",
    )
)
