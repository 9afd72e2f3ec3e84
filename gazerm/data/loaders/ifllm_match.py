"""Which query's response each sample of an IFLLM trace falls on.

A task is a short conversation: the worker asks ~3 queries in turn, and each panel of the study page
shows one response at a time (``textContent`` is replaced when the next answer arrives; before the
first answer, and in the release's early rounds between answers, the panel holds the study's
placeholder, :data:`PLACEHOLDER`). A trace of one panel therefore runs over every response that panel
showed, and each sample must be put on one of them. The rule, per sample in time order:

1. ``x, y = -1, -1``: the point is off this panel (on the other panel, elsewhere or no face found):
   ``off_panel``, attributed to the response being read (the last one matched, as the release does).
2. On the panel but no character under it (empty window or no index: margins, between lines):
   ``no_text``, attributed like ``off_panel``.
3. The window fits the placeholder near the index: ``placeholder``; no response is shown, so the
   sample and the following unmatched ones belong to no response until a response matches again.
4. Otherwise the window is looked up in the responses this panel showed, as the release's
   ``match_window_to_text`` does: it must occur within :data:`WINDOW_SLACK` characters either side
   of ``centre_idx`` in the response text (newlines as spaces). Where several responses fit, the
   earliest one *not before the response last matched* wins: the panel never goes back to an earlier
   answer (the release takes the earliest of all, which can put a late sample on an answer no longer
   shown). A match is ``matched`` and becomes the response being read; no fit is ``unmatched``,
   attributed to the response being read.

Texts are compared as the page showed them (:func:`display_text` of a response whose HTML entities the
loader has already unescaped, once, as the browser did): trimmed, blank lines removed (the page's
``trim().replace(/\\n\\s*\\n/g, '\\n')``), so ``centre_idx`` indexes
the same string. Removing whitespace does not change the words, so the word order of
``gazerm.features.base.word_spans`` is the same in the shown and the stored text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from gazerm.data.loaders.ifllm_traces import Trace

# The text each panel holds before its first answer arrives (eye_gazing_LLM/public/webpage/*.php).
PLACEHOLDER = (
    "After you type your question, please wait patiently. It might take up to 1 minute for AI to finish "
    "generating their answer. The AI's response will show up here."
)
# Characters either side of centre_idx the window may lie in (the release's WINDOW_CONTEXT_SIZE).
WINDOW_SLACK = 15
NO_QUERY = -1
_BLANK_LINES = re.compile(r"\n\s*\n")


class SampleKind(IntEnum):
    MATCHED = 0
    UNMATCHED = 1
    OFF_PANEL = 2
    NO_TEXT = 3
    PLACEHOLDER = 4


KIND_NAMES = tuple(kind.name.lower() for kind in SampleKind)


@dataclass(frozen=True)
class Assignment:
    """Per sample of a trace: its :class:`SampleKind` and the index of the response it is attributed to
    (:data:`NO_QUERY` for none)."""

    kind: np.ndarray
    query: np.ndarray

    def counts(self, query: int | None = None) -> dict[str, int]:
        """Samples of each kind, of the whole trace or of those attributed to ``query``."""
        kinds = self.kind if query is None else self.kind[self.query == query]
        found = np.bincount(kinds, minlength=len(SampleKind))
        return {name: int(found[kind]) for kind, name in zip(SampleKind, KIND_NAMES, strict=True)}


def display_text(text: str) -> str:
    """The (already unescaped) text as the study page showed it (see the module docstring)."""
    return _BLANK_LINES.sub("\n", text.strip())


def fits(text: str, window: str, centre: int) -> bool:
    """Whether ``window`` occurs within :data:`WINDOW_SLACK` characters of ``centre`` in ``text``."""
    return window in text[max(0, centre - WINDOW_SLACK) : centre + WINDOW_SLACK]


def assign(trace: Trace, texts: list[str]) -> Assignment:
    """Each sample's kind and response, ``texts`` being the shown responses of this panel in query order."""
    shown = [text.replace("\n", " ") for text in texts]
    kind = np.empty(len(trace), dtype=np.int64)
    query = np.full(len(trace), NO_QUERY, dtype=np.int64)
    off_panel = trace.off_panel
    reading, floor = NO_QUERY, 0
    for i, (window, centre) in enumerate(zip(trace.windows, trace.centre.tolist(), strict=True)):
        window = window.replace("\n", " ")
        if off_panel[i]:
            kind[i] = SampleKind.OFF_PANEL
        elif not window.strip() or centre < 0:
            kind[i] = SampleKind.NO_TEXT
        elif fits(PLACEHOLDER, window, centre):
            kind[i], reading = SampleKind.PLACEHOLDER, NO_QUERY
        else:
            found = next((q for q in range(floor, len(shown)) if fits(shown[q], window, centre)), None)
            if found is None:
                kind[i] = SampleKind.UNMATCHED
            else:
                kind[i], reading, floor = SampleKind.MATCHED, found, found
        query[i] = reading
    return Assignment(kind, query)
