"""IFLLM ("Your Mouse and Eyes Secretly Leak Your Preference"): LLM answers rated by MTurk workers
whose webcam gaze and mouse were recorded while they read (github.com/themehulpatwari/llm-implicit-
feedback, Apache-2.0). ``path`` is the release's ``dataset/`` directory as published:

- ``query_logs_table.csv``: one row per query (``query_ID, user_id, task_id, user_query,
  llm_response_1, llm_response_2, ..., likert_1, likert_2, preference, ...``); a task is one worker's
  short conversation of ~3 queries; ``llm_response_2`` is empty for pointwise tasks;
- ``task_table.csv``: per task its ``domain`` (the Wikipedia topic it is about);
- ``record_info_table.csv``: per worker ``consent`` (1: consented; anything else: left out, counted);
- ``user_behavior/<worker>/<task>/rel_*.csv``: the gaze and mouse traces of each panel
  (``gazerm.data.loaders.ifllm_traces``; samples put on responses by ``ifllm_match``).

Options: ``kind: pairwise`` (default) gives one "pairwise" example per query with two responses and a
preference of 1 or 2 (the preferred one chosen); ``kind: pointwise`` one "rating" example per query with
one response and its 1-5 ``likert_1`` as score. ``exclude_workers``: worker ids to leave out, or
``release_low_quality`` for the release's own list of 24 (:data:`RELEASE_LOW_QUALITY`). Queries of the
other kind, of excluded or non-consenting workers, and those without a usable label (preference 0 or
empty, no likert: a ``Tie``) are counted in the source's report, never dropped unseen.

Each example's ``group`` is its worker, ``domain`` its task's, texts are HTML-unescaped. ``context``:
the page shows one answer per panel, replaced by the next answer, while each panel's model answers with
its own conversation so far. A pointwise task is one conversation, so its earlier queries and answers
are the example's context. In a pairwise task the two models had different histories (each saw its own
earlier answers) and the worker saw neither on screen, so no one context is true for both responses:
pairwise examples have none (the query alone, as it was shown).

Behaviour: only ``user_behavior/<the example's worker>/<its task>/`` is read. Per response, the samples
the panel's gaze trace puts on it (``ifllm_match``) give its fixations and per-word measures
(``recorded_gaze``) and its behaviour features (``implicit``, ``gazerm.features.webcam``, pairwise tasks
with the relative ones). Mouse traces are written line by line with the gaze traces (same times), so a
mouse line belongs to the response its panel's gaze line belongs to. A response with no gaze sample on
its text has neither. The report counts samples of each kind over every trace read, the gaze samples
put on the examples' responses, and the examples with behaviour on every response.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gazerm.data.errors import DataError
from gazerm.data.loaders.base import Loaded, SourceFormat, SourceReport, Tie, register
from gazerm.data.loaders.common import number, text
from gazerm.data.loaders.ifllm_match import KIND_NAMES, Assignment, SampleKind, assign, display_text
from gazerm.data.loaders.ifllm_traces import Trace, read_trace
from gazerm.data.readers import Record, RecordOrError, read_records
from gazerm.data.schema import Pair, PreferenceExample
from gazerm.features.base import word_spans
from gazerm.features.webcam import (
    BEHAVIOUR_NAMES,
    PAIRWISE_NAMES,
    ResponseBehaviour,
    Samples,
    behaviour_features,
    char_words,
    mouse_motion,
    normalise_behaviour,
    pairwise_features,
    word_gaze,
)

NAME = "ifllm"
QUERY_LOGS = "query_logs_table.csv"
TASKS = "task_table.csv"
RECORDS = "record_info_table.csv"
BEHAVIOUR = "user_behavior"
# The release's low-quality workers: ``bad_workers`` in feature_creator/src/exclude_bad_workers.py.
RELEASE_LOW_QUALITY = (
    "worker_9683ed92", "worker_83c92f1d", "worker_030da562", "worker_8371812d",
    "worker_a0dc15c2", "worker_7bef026e", "worker_87c89391", "worker_fa234af6",
    "worker_b7c39547", "worker_efe70ff2", "worker_d20db140", "worker_dd6abc1c",
    "worker_891c885b", "worker_c07eb25b", "worker_f972316e", "worker_dc32691e",
    "worker_5f6ca345", "worker_29e7a1a6", "worker_6680f3d4", "worker_0ddfe023",
    "worker_327b4905", "worker_23415b2d", "worker_6ce6a3f8", "worker_cdd07ac1",
)  # fmt: skip
# (gaze trace, mouse trace) of each panel, in response order.
PANELS = {
    "pairwise": (("rel_gaze_one.csv", "rel_mouse_left.csv"), ("rel_gaze_two.csv", "rel_mouse_right.csv")),
    "pointwise": (("rel_gaze.csv", "rel_mouse.csv"),),
}
EMPTY = ("", "NULL")
PREFERENCES = {1.0: 0, 2.0: 1}
LIKERT = (1.0, 5.0)

# Every count the report holds, zero or not.
COUNTED = (
    "examples", "ties", "rows_of_the_other_kind", "excluded_rows", "no_consent_rows",
    "examples_without_behaviour_files", "examples_in_tasks_with_bad_traces", "responses_with_behaviour",
    "examples_with_behaviour_on_all_responses",
)  # fmt: skip

Kind = Literal["pairwise", "pointwise"]
ExcludeWorkers = list[str] | Literal["release_low_quality"] | None


@dataclass(frozen=True)
class Query:
    """One row of the query log: its worker, task, query text and (unescaped) responses."""

    row: int
    query_id: int
    worker: str
    task: str
    prompt: str
    responses: tuple[str, ...]
    record: Record

    @property
    def kind(self) -> Kind:
        return "pairwise" if len(self.responses) == 2 else "pointwise"


def read(path: Path) -> Iterator[RecordOrError]:
    """The query log of the release directory ``path``."""
    if not path.is_dir():
        raise DataError(str(path), None, "path", "format ifllm reads the release's dataset/ directory")
    return read_records(path / QUERY_LOGS)


def parse(
    records: Iterable[RecordOrError],
    file: str,
    *,
    kind: Kind = "pairwise",
    exclude_workers: ExcludeWorkers = None,
) -> Iterator[Loaded]:
    root = Path(file)
    logs = str(root / QUERY_LOGS)
    excluded = set(RELEASE_LOW_QUALITY if exclude_workers == "release_low_quality" else exclude_workers or ())
    consent = _consent(root)
    domains = _domains(root)
    counts: Counter[str] = Counter(dict.fromkeys(COUNTED, 0))
    workers: dict[str, set[str]] = {"excluded_workers": set(), "no_consent_workers": set()}
    tasks: dict[tuple[str, str], list[Query]] = {}
    for row, record in records:
        try:
            if isinstance(record, DataError):
                raise record
            query = _query(record, logs, row)
        except DataError as error:
            yield error
            continue
        tasks.setdefault((query.worker, query.task), []).append(query)
    built: list[tuple[PreferenceExample, list[ResponseBehaviour | None]]] = []
    samples: Counter[str] = Counter()
    for (worker, task), queries in tasks.items():
        queries.sort(key=lambda query: query.query_id)
        wanted = [query for query in queries if query.kind == kind]
        counts["rows_of_the_other_kind"] += len(queries) - len(wanted)
        if not wanted:
            continue
        left_out = "excluded" if worker in excluded else "no_consent" if consent.get(worker) != 1 else None
        if left_out:
            counts[f"{left_out}_rows"] += len(wanted)
            workers[f"{left_out}_workers"].add(worker)
            continue
        examples = []
        for query in wanted:
            try:
                example = _example(query, queries, domains.get((worker, task)), logs)
            except DataError as error:
                yield error
                continue
            if isinstance(example, Tie):
                counts["ties"] += 1
                yield example
            else:
                examples.append((queries.index(query), example))
        if not examples:
            continue
        try:
            behaviour = _task_behaviour(
                root / BEHAVIOUR / worker / task, kind, queries, [index for index, _ in examples], samples
            )
        except DataError as error:
            counts["examples_in_tasks_with_bad_traces"] += len(examples)
            yield error
            continue
        if behaviour is None:
            counts["examples_without_behaviour_files"] += len(examples)
            behaviour = [[] for _ in examples]
        built += [(example, found) for (_, example), found in zip(examples, behaviour, strict=True)]
    yield from _with_features(built, kind, counts)
    counts.update({name: len(found) for name, found in workers.items()})
    report: dict[str, Any] = dict(counts)
    report["excluded_worker_ids"] = sorted(workers["excluded_workers"])
    report["samples"] = {name: dict(found) for name, found in _by_trace(samples).items()}
    names = PAIRWISE_NAMES if kind == "pairwise" else BEHAVIOUR_NAMES
    yield SourceReport(file, report, names)


def _with_features(
    built: list[tuple[PreferenceExample, list[ResponseBehaviour | None]]], kind: Kind, counts: Counter[str]
) -> Iterator[PreferenceExample]:
    """The examples with their recorded gaze and implicit features; per-word measures in one batch."""
    fixations, texts = {}, {}
    for index, (example, behaviour) in enumerate(built):
        for side, found in enumerate(behaviour):
            if found is not None:
                fixations[f"{index}/{side}"] = found.fixations
                texts[f"{index}/{side}"] = example.responses[side]
    measured = word_gaze(texts, fixations)
    for index, (example, behaviour) in enumerate(built):
        behaviour = behaviour or [None] * len(example.responses)  # no traces: every response without
        raw = [None if found is None else behaviour_features(found) for found in behaviour]
        if kind == "pairwise":
            raw = [
                None if own is None else pairwise_features(own, raw[1 - side]) for side, own in enumerate(raw)
            ]
        example.implicit = [
            None if vector is None else normalise_behaviour(vector).tolist() for vector in raw
        ]
        example.recorded_gaze = [measured.get(f"{index}/{side}") for side in range(len(behaviour))]
        counts["responses_with_behaviour"] += sum(vector is not None for vector in raw)
        counts["examples_with_behaviour_on_all_responses"] += all(vector is not None for vector in raw)
        counts["examples"] += 1
        yield example


def _task_behaviour(
    directory: Path, kind: Kind, queries: list[Query], indices: list[int], samples: Counter[str]
) -> list[list[ResponseBehaviour | None]] | None:
    """Per example (the queries at ``indices``), the behaviour of each of its responses (None where no
    gaze sample fell on its text); None when the task has no traces of this kind. ``samples`` gathers
    the accounting: every sample of each trace read, and those put on the examples' responses."""
    files = [(directory / gaze, directory / mouse) for gaze, mouse in PANELS[kind]]
    if not all(path.is_file() for pair in files for path in pair):
        return None
    panels = []
    for side, (gaze_file, mouse_file) in enumerate(files):
        gaze, mouse = read_trace(gaze_file), read_trace(mouse_file)
        if not np.array_equal(gaze.t_ms, mouse.t_ms):
            raise DataError(str(mouse_file), None, "rel_ts", f"not line by line with {gaze_file.name}")
        # a task may hold queries of the other kind: one answer where a pairwise panel two has none
        shown = [
            display_text(query.responses[side] if side < len(query.responses) else "") for query in queries
        ]
        on_gaze, on_mouse = assign(gaze, shown), assign(mouse, shown)
        samples.update({f"gaze.{name}": n for name, n in on_gaze.counts().items()})
        samples.update({f"mouse.{name}": n for name, n in on_mouse.counts().items()})
        for index in indices:
            samples.update({f"attributed.{name}": n for name, n in on_gaze.counts(index).items()})
        panels.append([_response(gaze, mouse, on_gaze, index, shown[index]) for index in indices])
    return [list(found) for found in zip(*panels, strict=True)]


def _response(
    gaze: Trace, mouse: Trace, on_gaze: Assignment, index: int, shown: str
) -> ResponseBehaviour | None:
    lines = np.flatnonzero(on_gaze.query == index)
    on_text = lines[on_gaze.kind[lines] == SampleKind.MATCHED]
    if not len(on_text):
        return None
    gaze_next, mouse_next = gaze.next_times(), mouse.next_times()
    path_px, moving_ms, mouse_ms = mouse_motion(
        Samples(lines, mouse.t_ms[lines], mouse_next[lines]), mouse.x[lines], mouse.y[lines]
    )
    return ResponseBehaviour(
        n_words=len(word_spans(shown)),
        on_text=Samples(on_text, gaze.t_ms[on_text], gaze_next[on_text]),
        words=char_words(shown, gaze.centre[on_text]),
        samples=len(lines),
        off_panel=int((on_gaze.kind[lines] == SampleKind.OFF_PANEL).sum()),
        mouse_path_px=path_px,
        mouse_moving_ms=moving_ms,
        mouse_ms=mouse_ms,
    )


def _by_trace(samples: Counter[str]) -> dict[str, Counter[str]]:
    """``{"gaze": {...}, "mouse": {...}, "attributed": {...}}`` from the flat ``trace.kind`` counts."""
    grouped: dict[str, Counter[str]] = {"gaze": Counter(), "mouse": Counter(), "attributed": Counter()}
    for key, n in samples.items():
        trace, name = key.split(".")
        grouped[trace][name] += n
    for found in grouped.values():
        found.update(dict.fromkeys(KIND_NAMES, 0))
    return grouped


def _query(record: Record, file: str, row: int) -> Query:
    second = record.get("llm_response_2")
    responses = [text(record, "llm_response_1", file, row)]
    if second is not None and second.strip() not in EMPTY:
        responses.append(second)
    query_id = number(record, "query_ID", file, row)
    return Query(
        row,
        int(query_id),
        text(record, "user_id", file, row),
        text(record, "task_id", file, row),
        html.unescape(text(record, "user_query", file, row)),
        tuple(html.unescape(response) for response in responses),
        record,
    )


def _example(query: Query, task: list[Query], domain: str | None, file: str) -> PreferenceExample | Tie:
    """The query's example, or a ``Tie`` when it states no preference (0 or empty) or has no rating."""
    common = {
        "source": NAME,
        "source_file": file,
        "source_row": query.row,
        "prompt": query.prompt,
        "responses": list(query.responses),
        "domain": domain,
        "group": query.worker,
    }
    if query.kind == "pairwise":
        field = "preference"
        if not query.record.get(field, "").strip() or number(query.record, field, file, query.row) == 0:
            return Tie(file, query.row)
        chosen = PREFERENCES.get(number(query.record, field, file, query.row))
        if chosen is None:
            raise DataError(file, query.row, field, f"expected 0, 1 or 2, got {query.record[field]!r}")
        return PreferenceExample(**common, label_kind="pairwise", pairs=[Pair(chosen, 1 - chosen)])
    field = "likert_1"
    if not query.record.get(field, "").strip():
        return Tie(file, query.row)
    score = number(query.record, field, file, query.row)
    if not LIKERT[0] <= score <= LIKERT[1]:
        raise DataError(file, query.row, field, f"expected a rating 1-5, got {query.record[field]!r}")
    earlier = task[: task.index(query)]
    context = [
        turn
        for before in earlier
        for turn in (
            {"role": "user", "content": before.prompt},
            {"role": "assistant", "content": before.responses[0]},
        )
    ]
    return PreferenceExample(**common, label_kind="rating", scores=[score], context=context)


def _consent(root: Path) -> dict[str, float]:
    """Each worker's consent value; a worker absent from the table has none (left out, counted)."""
    file = str(root / RECORDS)
    found = {}
    for row, record in read_records(root / RECORDS):
        if isinstance(record, DataError):
            raise record
        found[text(record, "user_id", file, row)] = number(record, "consent", file, row)
    return found


def _domains(root: Path) -> dict[tuple[str, str], str | None]:
    file = str(root / TASKS)
    found = {}
    for row, record in read_records(root / TASKS):
        if isinstance(record, DataError):
            raise record
        key = (text(record, "user_id", file, row), text(record, "task_id", file, row))
        found[key] = (record.get("domain") or "").strip() or None
    return found


register(
    SourceFormat(
        name=NAME,
        hub_name=None,
        parse=parse,
        description="the IFLLM release directory: queries with one or two LLM answers, ratings, preferences "
        "and webcam gaze/mouse traces",
        read=read,
        whole_source=True,
    )
)
