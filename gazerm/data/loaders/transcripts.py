"""Parser for the Human/Assistant transcripts that hh-rlhf and the DSP release store candidates as.

Both sources store each candidate as a full conversation ending in the candidate reply, so the
candidates of one example must agree on everything before that reply; that shared prefix
becomes ``context`` + ``prompt`` and the final replies become ``responses``.

The files mark speakers in one of two ways, and ``STYLES`` is the one place that knows them:

* ``anthropic`` — ``"\\n\\nHuman: …\\n\\nAssistant: …"``: Anthropic HH-RLHF, and DSP's
  ``helpful``/``harmless`` files (cleaned copies of it).
* ``heading`` — ``"## Human:\\n…\\n\\n## Assistant:\\n…"``: DSP's own template (``QUERY_PROMPT`` in
  its ``reward_datasets.py``), used by its ``webgpt`` and ``gpt4llm`` files and by the domain files
  its script converts to text-score pairs. A heading only counts at the start of a line, so the
  ``### Instruction:`` lines of an Alpaca prompt stay part of the human turn.

A transcript is read in the style whose first marker comes first in it, so a reply that quotes
the other style's marker stays text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

from gazerm.data.errors import DataError


@dataclass(frozen=True)
class Style:
    """How one family of transcripts marks its turns: the two speaker markers and what precedes them."""

    name: str
    human: str
    assistant: str
    after: str  # what a marker must follow, unless it opens the text: a blank line, or any line break
    shape: str  # one turn each, for error messages

    def turns(self, transcript: str) -> list[re.Match[str]]:
        speakers = f"{re.escape(self.human)}|{re.escape(self.assistant)}"
        return list(re.finditer(f"(?:^|{self.after})({speakers})", transcript))


STYLES = (
    Style("anthropic", "Human:", "Assistant:", "\n\n", "\n\nHuman: …\n\nAssistant: …"),
    Style("heading", "## Human:", "## Assistant:", "\n", "## Human:\n…\n\n## Assistant:\n…"),
)


@dataclass(frozen=True)
class Transcript:
    context: list[dict[str, str]]
    prompt: str
    reply: str


def parse_transcript(transcript: str, file: str, row: int, field: str) -> Transcript:
    """Split one transcript into the turns before the last human turn, that turn, and the reply after it.

    The reply is everything after the last human turn: a candidate that goes on with several
    assistant turns keeps them all, verbatim, because together they are what was rated.
    """

    def fail(message: str) -> DataError:
        return DataError(file, row, field, message)

    found = [(style, turns) for style in STYLES if (turns := style.turns(transcript))]
    if not found:
        expected = " or ".join(f"{style.shape!r} ({style.name})" for style in STYLES)
        raise fail(f"no speaker turns of a known style: expected {expected}")
    style, markers = min(found, key=lambda item: item[1][0].start())
    if transcript[: markers[0].start()].strip():
        raise fail(f"text before the first turn: {transcript[: markers[0].start()]!r:.60}")
    humans = [k for k, marker in enumerate(markers) if marker.group(1) == style.human]
    if not humans or humans[-1] == len(markers) - 1:
        raise fail(f"does not end with a {style.human!r} turn followed by an {style.assistant!r} reply")
    last = humans[-1]
    turns = [
        {
            "role": "user" if marker.group(1) == style.human else "assistant",
            "content": transcript[marker.end() : following.start()].strip(),
        }
        for marker, following in pairwise(markers[: last + 2])
    ]
    reply = transcript[markers[last + 1].end() :].strip()
    if not turns[-1]["content"]:
        raise fail(f"final {style.human!r} turn is empty")
    if not reply:
        raise fail(f"final {style.assistant!r} reply is empty")
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
