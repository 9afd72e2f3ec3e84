"""DSP ("Everyone Deserves A Reward: Learning Customized Human Preferences") release files.

The release ships plain JSON files, not a hub dataset, so both formats have no ``hub_name``:
read a local file with ``path``, or load it through the hub's local "json" builder
(``hub_name="json"``, ``data_files=...``).

* ``dsp`` — the "text-score" files (``helpful``, ``harmless``, ``webgpt``, ``gpt4llm``, and the
  domain pairs DSP's script converts): ``{"text": [transcripts], "score": [numbers]}``. The
  transcripts are Human/Assistant conversations, in any style of
  :data:`~gazerm.data.loaders.transcripts.STYLES`, that differ only in the final reply; the replies
  become the responses, higher score is better (pairs with margins from the scores; ties give
  none). Two responses are a "pairwise" example; more are a "ranking" (best first by score), or a
  "rating" when some scores tie, because a ranking would order the tied responses. An item whose
  scores are all equal, or whose replies are all the same text, states no preference: it is a
  :class:`~gazerm.data.loaders.base.Tie` (counted by ``prepare``), not an example and not an error.
  WebGPT ties about a quarter of its items.
* ``dsp_domain`` — the domain-specific preference file: ``{"query": str, "responses": {domain:
  response}}`` with one response each from the academy, business, entertainment and literature
  domains plus a "normal" one. As in the paper, for a chosen ``domain`` option that domain's
  response is preferred over each of the other four, giving up to four pairs (no margin). The
  generated responses sometimes coincide (short factual answers): a text is kept once, and one
  equal to the domain's response is that response, not a rejected one. A query whose responses
  all equal the domain's states no preference: a ``Tie``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from gazerm.data.errors import DataError
from gazerm.data.loaders.base import Loaded, SourceFormat, Tie, guarded, register
from gazerm.data.loaders.common import nested, number, text
from gazerm.data.loaders.transcripts import parse_candidates
from gazerm.data.readers import Record, RecordOrError
from gazerm.data.schema import Pair, PreferenceExample, pairs_from_scores

DOMAINS = ("academy", "business", "entertainment", "literature")
RESPONSE_KEYS = (*DOMAINS, "normal")


def parse_text_score(records: Iterable[RecordOrError], file: str) -> Iterator[Loaded]:
    def build(record: Record, row: int) -> Iterator[PreferenceExample | Tie]:
        transcripts = nested(record, "text", list, file, row)
        scores = nested(record, "score", list, file, row)
        if len(transcripts) < 2:
            raise DataError(file, row, "text", f"needs at least 2 transcripts, got {len(transcripts)}")
        if len(scores) != len(transcripts):
            raise DataError(file, row, "score", f"{len(scores)} scores for {len(transcripts)} texts")
        candidates = [(field, text(transcripts, field, file, row)) for field in transcripts]
        shared, replies = parse_candidates(candidates, file, row)
        values = [number(scores, field, file, row) for field in scores]
        if len(set(values)) == 1 or len(set(replies)) == 1:
            yield Tie(file, row)
            return
        distinct = len(set(values)) == len(values)
        kind = "pairwise" if len(replies) == 2 else "ranking" if distinct else "rating"
        yield PreferenceExample(
            source="dsp",
            source_file=file,
            source_row=row,
            prompt=shared.prompt,
            context=shared.context,
            responses=replies,
            label_kind=kind,
            pairs=pairs_from_scores(values),
            scores=values,
            ranking=sorted(range(len(values)), key=lambda i: -values[i]) if kind == "ranking" else None,
        )

    return guarded(records, file, build)


def parse_domain(records: Iterable[RecordOrError], file: str, *, domain: str) -> Iterator[Loaded]:
    if domain not in DOMAINS:
        raise DataError(file, None, "options.domain", f"expected one of {DOMAINS}, got {domain!r}")
    order = [domain, *(key for key in RESPONSE_KEYS if key != domain)]

    def build(record: Record, row: int) -> Iterator[PreferenceExample | Tie]:
        given = nested(record, "responses", dict, file, row)
        responses = list(dict.fromkeys(text(given, f"responses.{key}", file, row) for key in order))
        if len(responses) == 1:
            yield Tie(file, row)
            return
        yield PreferenceExample(
            source="dsp_domain",
            source_file=file,
            source_row=row,
            prompt=text(record, "query", file, row),
            responses=responses,
            label_kind="pairwise",
            pairs=[Pair(0, other) for other in range(1, len(responses))],
            domain=domain,
        )

    return guarded(records, file, build)


register(
    SourceFormat(
        name="dsp",
        hub_name=None,
        parse=parse_text_score,
        description="DSP text-score JSON: {'text': [HH or '## Human:' transcripts], 'score': [numbers]}",
    )
)
register(
    SourceFormat(
        name="dsp_domain",
        hub_name=None,
        parse=parse_domain,
        description="DSP domain JSON {'query', 'responses': {domain: text}}; option 'domain' is preferred",
    )
)
