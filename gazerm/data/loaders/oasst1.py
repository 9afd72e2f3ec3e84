"""OpenAssistant oasst1: flat message rows rebuilt into conversation trees.

Every prompter message with at least two ranked assistant replies gives one "ranking" example:
the prompt is that message, ``context`` the conversation above it (root first), the responses its
ranked replies ordered by ``rank`` (0 is best), so ``ranking`` is ``[0, 1, ...]`` and the pairs
follow it. The example's row is the prompter message's input row.

Rules, not errors (the release marks such messages itself): deleted messages, messages that
failed review (``review_result`` false) and replies without a rank are left out, and so is every
prompt below a left-out message; a prompt left with fewer than two ranked replies gives no
example. Each exclusion is counted and the counts are logged once the input is read. The ``lang``
option keeps only prompts in the given language(s).

That is ``pairing: ranking``, the default. ``pairing: reference`` gives the pairs of the "Seeing Eye
to AI" reference code (``_filter_data_oasst1``, ``_process_data_questionanswer`` in
``utils/dataset_proceser.py``, ``_process_responses_chosen_rejected`` in
``rlhf_rw/reward_utils/dataset_proceser_reward.py``), one pairwise example per prompt text:

- deleted messages and, with ``lang``, messages (prompts and replies alike) in other languages are
  left out; review results are not looked at, nor are the messages above a prompt;
- the prompt is the prompter message alone, without the conversation above it (``context`` empty);
- the replies of all prompter messages with the same text are pooled (the reference groups by the
  question's text, so a "Hello" asked in several trees is one example), unranked ones left out;
- of those, sorted by ``rank`` (stable, in input order), the first (the best: rank 0) and the last
  (the worst) form the one pair; a text with a single ranked reply gives nothing (counted), one whose
  best and worst share a rank gives a ``Tie``;
- examples come in the order of their prompt text (the reference's pandas ``groupby`` sorts it),
  which is the order ``prepare``'s ``shuffle`` split permutes.

The reference code, though, makes the *worst* reply the chosen one: it sorts by rank ascending and
takes the last as chosen, while oasst1's rank 0 is the best (the dataset card: "the lower the rank the
better"). ``pairing: reference`` keeps the pair and chooses the better reply; ``pairing:
reference_inverted`` reproduces the reference code's labels (the worse reply chosen), for comparing
with the paper's numbers. A pair whose two replies have the same text (possible across pooled
prompts) is no preference gazerm can train on: a ``Tie`` here, a row in the reference.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from gazerm.data.errors import DataError
from gazerm.data.loaders.base import Loaded, SourceFormat, Tie, register
from gazerm.data.loaders.common import number, optional, text
from gazerm.data.readers import Record, RecordOrError, require
from gazerm.data.schema import Pair, PreferenceExample, pairs_from_ranking

log = logging.getLogger(__name__)

NAME = "oasst1"
ROLES = {"prompter": "user", "assistant": "assistant"}
DELETED, FAILED_REVIEW = "deleted messages", "messages that failed review"

Pairing = Literal["ranking", "reference", "reference_inverted"]


@dataclass(frozen=True)
class Message:
    row: int
    message_id: str
    parent_id: str | None
    role: str
    text: str
    rank: float | None
    excluded: str | None  # why the release marks the message unusable, if it does
    lang: str | None


def _message(record: Record, row: int, file: str) -> Message:
    role = require(record, "role", str, file, row)
    if role not in ROLES:
        raise DataError(file, row, "role", f"expected 'prompter' or 'assistant', got {role!r:.60}")
    return Message(
        row=row,
        message_id=text(record, "message_id", file, row),
        parent_id=optional(text, record, "parent_id", file, row),
        role=role,
        text=text(record, "text", file, row),
        rank=_rank(record, file, row),
        excluded=_exclusion(record, file, row),
        lang=record.get("lang"),
    )


def _rank(record: Record, file: str, row: int) -> float | None:
    rank = record.get("rank")
    if rank is None or (isinstance(rank, float) and math.isnan(rank)):  # pandas writes a null rank as NaN
        return None
    return number(record, "rank", file, row)


def _exclusion(record: Record, file: str, row: int) -> str | None:
    if record.get("deleted") is not None and require(record, "deleted", bool, file, row):
        return DELETED
    if record.get("review_result") is not None and not require(record, "review_result", bool, file, row):
        return FAILED_REVIEW
    return None


def _read_messages(records: Iterable[RecordOrError], file: str) -> Iterator[Message | DataError]:
    seen: dict[str, int] = {}
    for row, record in records:
        if isinstance(record, DataError):
            yield record
            continue
        try:
            message = _message(record, row, file)
        except DataError as error:
            yield error
            continue
        if message.message_id in seen:
            yield DataError(file, row, "message_id", f"duplicate of row {seen[message.message_id]}")
            continue
        seen[message.message_id] = row
        yield message


def _ancestors(message: Message, messages: dict[str, Message], file: str) -> list[Message]:
    """The messages above ``message``, root first; a parent missing from the input is an error."""
    chain: list[Message] = []
    parent_id = message.parent_id
    while parent_id is not None:
        parent = messages.get(parent_id)
        if parent is None:
            raise DataError(file, message.row, "parent_id", f"ancestor {parent_id!r} is not in the input")
        if parent in chain:
            raise DataError(file, message.row, "parent_id", f"message {parent_id!r} is its own ancestor")
        chain.append(parent)
        parent_id = parent.parent_id
    return chain[::-1]


def _example(prompt: Message, replies: list[Message], above: list[Message], file: str) -> PreferenceExample:
    ranks = [reply.rank for reply in replies]
    if len(set(ranks)) != len(ranks):
        raise DataError(file, prompt.row, "rank", f"ranked replies share a rank: {sorted(ranks)}")
    ranked = sorted(replies, key=lambda reply: reply.rank)
    ranking = list(range(len(ranked)))
    return PreferenceExample(
        source=NAME,
        source_file=file,
        source_row=prompt.row,
        prompt=prompt.text,
        context=[{"role": ROLES[m.role], "content": m.text} for m in above],
        responses=[reply.text for reply in ranked],
        label_kind="ranking",
        ranking=ranking,
        pairs=pairs_from_ranking(ranking),
    )


def parse(
    records: Iterable[RecordOrError],
    file: str,
    *,
    lang: str | list[str] | None = None,
    pairing: Pairing = "ranking",
) -> Iterator[Loaded]:
    langs = {lang} if isinstance(lang, str) else set(lang or ())
    if pairing != "ranking":
        yield from _reference_pairs(records, file, langs, inverted=pairing == "reference_inverted")
        return
    messages: dict[str, Message] = {}
    replies: defaultdict[str, list[Message]] = defaultdict(list)
    left_out: Counter[str] = Counter()
    for message in _read_messages(records, file):
        if isinstance(message, DataError):
            yield message
            continue
        messages[message.message_id] = message
        if message.excluded:
            left_out[message.excluded] += 1
        elif message.role == "assistant" and message.rank is None:
            left_out["unranked replies"] += 1
        elif message.role == "assistant" and message.parent_id is not None:
            replies[message.parent_id].append(message)

    for prompt in messages.values():
        if prompt.role != "prompter" or prompt.excluded:
            continue
        if langs and prompt.lang not in langs:
            left_out["prompts in other languages"] += 1
            continue
        ranked = replies.get(prompt.message_id, [])
        if len(ranked) < 2:
            left_out["prompts with fewer than 2 ranked replies"] += 1
            continue
        try:
            above = _ancestors(prompt, messages, file)
            example = None if any(m.excluded for m in above) else _example(prompt, ranked, above, file)
        except DataError as error:
            yield error
            continue
        if example is None:
            left_out["prompts below a left-out message"] += 1
        else:
            yield example
    log.info("%s: left out by rule: %s", file, dict(left_out))


def _reference_pairs(
    records: Iterable[RecordOrError], file: str, langs: set[str], inverted: bool
) -> Iterator[Loaded]:
    """``pairing: reference``: one best-vs-worst pair per prompt text, as the module docstring says."""
    left_out: Counter[str] = Counter()
    prompts: list[Message] = []
    ranked: defaultdict[str, list[Message]] = defaultdict(list)  # parent id -> ranked replies, input order
    for message in _read_messages(records, file):
        if isinstance(message, DataError):
            yield message
        elif message.excluded == DELETED:
            left_out[DELETED] += 1
        elif langs and message.lang not in langs:
            left_out["messages in other languages"] += 1
        elif message.role == "prompter":
            prompts.append(message)
        elif message.rank is None:
            left_out["unranked replies"] += 1
        elif message.parent_id is not None:
            ranked[message.parent_id].append(message)

    # prompt text -> (its first prompt with ranked replies, the replies of all its prompts)
    by_text: dict[str, tuple[Message, list[Message]]] = {}
    for prompt in prompts:
        replies = ranked.get(prompt.message_id, [])
        first, pooled = by_text.get(prompt.text, (prompt, []))
        by_text[prompt.text] = (prompt if replies and not pooled else first, pooled + replies)
    for question in sorted(by_text):
        first, replies = by_text[question]
        if len(replies) < 2:
            left_out["prompt texts with fewer than 2 ranked replies"] += 1
            continue
        ordered = sorted(replies, key=lambda reply: reply.rank)  # stable: input order among equal ranks
        best, worst = ordered[0], ordered[-1]
        if best.rank == worst.rank or best.text == worst.text:
            left_out["best and worst reply equal in rank or text"] += 1
            yield Tie(file, first.row)
            continue
        chosen, rejected = (worst, best) if inverted else (best, worst)
        yield PreferenceExample(
            source=NAME,
            source_file=file,
            source_row=first.row,
            prompt=first.text,
            responses=[chosen.text, rejected.text],
            label_kind="pairwise",
            pairs=[Pair(0, 1)],
        )
    log.info("%s: left out by rule: %s", file, dict(left_out))


register(
    SourceFormat(
        name=NAME,
        hub_name="OpenAssistant/oasst1",
        parse=parse,
        description="flat oasst1 message rows; each prompt with >= 2 ranked replies gives a ranking example",
    )
)
