"""Parser for Anthropic-style transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ..."), shared by hh-rlhf and DSP.

Both sources store each candidate as a full conversation ending in the candidate reply, so the
candidates of one example must agree on everything before that reply; that shared prefix
becomes ``context`` + ``prompt`` and the final replies become ``responses``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

from gazerm.data.errors import DataError

_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}


@dataclass(frozen=True)
class Transcript:
    context: list[dict[str, str]]
    prompt: str
    reply: str


def parse_transcript(transcript: str, file: str, row: int, field: str) -> Transcript:
    """Split one transcript into the turns before the last human turn, that turn, and the reply after it.

    The reply is everything after the last human turn: a candidate that goes on with several
    "Assistant:" turns keeps them all, verbatim, because together they are what was rated.
    """

    def fail(message: str) -> DataError:
        return DataError(file, row, field, message)

    markers = list(_TURN.finditer(transcript))
    if not markers:
        raise fail("no 'Human:'/'Assistant:' turns found")
    if transcript[: markers[0].start()].strip():
        raise fail(f"text before the first turn: {transcript[: markers[0].start()]!r:.60}")
    humans = [k for k, marker in enumerate(markers) if marker.group(1) == "Human"]
    if not humans or humans[-1] == len(markers) - 1:
        raise fail("does not end with a 'Human:' turn followed by an 'Assistant:' reply")
    last = humans[-1]
    turns = [
        {"role": _ROLES[marker.group(1)], "content": transcript[marker.end() : following.start()].strip()}
        for marker, following in pairwise(markers[: last + 2])
    ]
    reply = transcript[markers[last + 1].end() :].strip()
    if not turns[-1]["content"]:
        raise fail("final 'Human:' turn is empty")
    if not reply:
        raise fail("final 'Assistant:' reply is empty")
    return Transcript(turns[:-1], turns[-1]["content"], reply)


def parse_candidates(transcripts: list[tuple[str, str]], file: str, row: int) -> tuple[Transcript, list[str]]:
    """Parse ``(field, transcript)`` candidates; return the shared conversation and every final reply."""
    parsed = [parse_transcript(value, file, row, field) for field, value in transcripts]
    first = parsed[0]
    for (field, _), other in zip(transcripts[1:], parsed[1:], strict=True):
        if (other.context, other.prompt) != (first.context, first.prompt):
            raise DataError(
                file, row, field, f"conversation before the final reply differs from '{transcripts[0][0]}'"
            )
    return first, [p.reply for p in parsed]
