"""A tiny IFLLM release in the published layout, written into a test's ``tmp_path``.

Three CSV tables with the release's headers, and ``user_behavior/<worker>/<task>/`` with headerless
``rel_*.csv`` traces in the release's column order (``x, y, window, centre_idx, rel_ts, flag, abs_ts``;
the pointwise task in the six-field layout of the first rounds). Workers: ``worker_good`` (a pairwise
task of three queries, one a tie, with hand-made traces; a pointwise task of two queries),
``worker_nocons`` (consent 0) and ``worker_9683ed92`` (on the release's low-quality list, no traces).
The traces and what they must give are described where they are written.
"""

from __future__ import annotations

from pathlib import Path

from gazerm.data.loaders.ifllm_match import PLACEHOLDER
from tests.data.util import write_csv

QUERY_HEADER = [
    "query_ID", "user_id", "task_id", "user_query", "llm_response_1", "llm_response_2", "llm_name_1",
    "llm_name_2", "likert_1", "likert_2", "preference", "adjustment", "query_timestamp",
]  # fmt: skip
TASK_HEADER = [
    "user_id", "task_id", "copy_sentence", "summary", "feedback", "understand_before", "understand_after",
    "query_copy", "llm_response_copy", "accuracy", "finished", "domain",
]  # fmt: skip
RECORD_HEADER = ["user_id", "consent", "age", "location", "education", "race", "gender", "inserted_at"]

GOOD, NO_CONSENT, LOW_QUALITY = "worker_good", "worker_nocons", "worker_9683ed92"
# Pairwise task 1 of worker_good: (query id, query, response 1, response 2, preference)
PAIRWISE = [
    (10, "France?", "Paris is the capital of France.", "It is &quot;Paris&quot; of course.", "2.0"),
    (11, "And of Germany?", "Berlin is large and green.", "Berlin has many parks today.", "1.0"),
    (14, "And Italy?", "Rome is old.", "Rome is very old.", "0.0"),
]  # fmt: skip
POINTWISE = [(12, "Is tea a drink?", "Tea is a drink.", "4.0"), (13, "And coffee?", "Coffee is too.", "5.0")]
TIMES = [0, 100, 200, 300, 400, 500, 600, 700, 800, 1400, 1500, 1600, 1700, 1800]
OFF = None  # an off-panel line (-1, -1)
NO_TEXT = ""  # on the panel, no character under the point


def window(text: str, centre: int) -> str:
    """What the page logs: up to 10 characters either side of the point (one line here)."""
    return text[max(0, centre - 10) : centre + 10]


def _line(x: float, y: float, text: str | None, centre: int | None, t: float, flag: bool) -> str:
    """One trace line as the page wrote it: the window between quotes, nothing escaped."""
    shown = "" if not text else f'"{text}"'
    fields = [f"{x:g}", f"{y:g}", shown, "" if centre is None else str(centre), f"{t:g}"]
    return ",".join([*fields, *(["1"] if flag else []), str(1_700_000_000_000 + int(t))])


def _gaze(samples: list[tuple[str, int] | str | None], flag: bool = True) -> str:
    """A gaze trace of (text, centre) points, ``OFF`` and ``NO_TEXT`` lines at :data:`TIMES`."""
    lines = []
    for t, sample in zip(TIMES, samples, strict=False):
        if sample is OFF:
            lines.append(_line(-1, -1, None, None, t, flag))
        elif sample == NO_TEXT:
            lines.append(_line(50, 60, None, None, t, flag))
        else:
            text, centre = sample
            lines.append(_line(100 + centre, 20, window(text, centre), centre, t, flag))
    return "\n".join(lines) + "\n"


def _mouse(points: list[tuple[float, float] | None], flag: bool = True) -> str:
    """A mouse trace of panel positions (no text under the pointer) or ``OFF`` at :data:`TIMES`."""
    return (
        "\n".join(
            _line(-1, -1, None, None, t, flag) if p is OFF else _line(p[0], p[1], None, None, t, flag)
            for t, p in zip(TIMES, points, strict=False)
        )
        + "\n"
    )


# Panel one (response 1): line 1 the placeholder; 2 off; 3-6 on "Paris is the capital of France." at
# words 0, 0, 3, 3; 7 off; 8 word 0 (a regression); 9 word 5, then 600 ms without samples (capped at
# 300); 10 on the panel between lines; 11 a window on no response (quote and comma unescaped, as the
# page wrote them); 12-13 words 0 and 1 of the second query's answer; 14 off.
R1A, R1B = "Paris is the capital of France.", 'It is "Paris" of course.'
R2A, R2B = "Berlin is large and green.", "Berlin has many parks today."
GAZE_ONE = [
    (PLACEHOLDER, 160), OFF, (R1A, 0), (R1A, 2), (R1A, 14), (R1A, 15), OFF, (R1A, 1), (R1A, 25), NO_TEXT,
    ('Say "hi", ok', 3), (R2A, 0), (R2A, 8), OFF,
]  # fmt: skip
# Panel two (response 2): words 2, 2 and 4 of 'It is "Paris" of course.' (lines 2, 3, 7), word 0 of the
# second answer at line 13, off the panel elsewhere.
GAZE_TWO = [OFF, (R1B, 7), (R1B, 8), OFF, OFF, OFF, (R1B, 18), OFF, OFF, OFF, OFF, OFF, (R2B, 0), OFF]
# The mouse over panel one: 50 px, still, 50 px (lines 3-6), off at 7, resting at lines 8-11.
MOUSE_LEFT = [
    OFF,
    OFF,
    (0, 0),
    (30, 40),
    (30, 40),
    (60, 80),
    OFF,
    (60, 80),
    (60, 80),
    (60, 80),
    (60, 80),
    OFF,
    OFF,
    OFF,
]
MOUSE_RIGHT = [OFF] * len(TIMES)
# Pointwise task 2: two samples on the first answer ("Tea" then "is": one 200 ms fixation), then off.
POINT_GAZE = [(POINTWISE[0][2], 0), (POINTWISE[0][2], 4), OFF]


def write_release(root: Path) -> Path:
    """Write the release under ``root``; returns its ``dataset/`` directory."""
    dataset = root / "dataset"
    dataset.mkdir(parents=True)
    rows = [
        [
            qid,
            GOOD,
            "1",
            query,
            r1,
            r2,
            "gpt-4o-mini",
            "deepseek",
            "4.0",
            "3.0",
            pref,
            "0",
            "2025-09-09 13:41:57",
        ]
        for qid, query, r1, r2, pref in PAIRWISE
    ]
    rows += [
        [qid, GOOD, "2", query, response, "", "gpt-4o-mini", "", likert, "", "", "0", "2025-09-09 14:00:00"]
        for qid, query, response, likert in POINTWISE
    ]
    rows += [
        [20, NO_CONSENT, "3", "Who?", "Someone.", "Nobody.", "a", "b", "4.0", "4.0", "1.0", "0", ""],
        [30, LOW_QUALITY, "4", "Why?", "Because.", "No reason.", "a", "b", "4.0", "4.0", "2.0", "0", ""],
    ]
    write_csv(dataset / "query_logs_table.csv", QUERY_HEADER, rows)
    tasks = [[worker, task, "", "", "", "", "", "", "", "", "", domain] for worker, task, domain in (
        (GOOD, "1", "Europe"), (GOOD, "2", "Drinks"), (NO_CONSENT, "3", "People"), (LOW_QUALITY, "4", ""),
    )]  # fmt: skip
    write_csv(dataset / "task_table.csv", TASK_HEADER, tasks)
    records = [[worker, consent, "30", "", "", "", "", ""] for worker, consent in (
        (GOOD, "1"), (NO_CONSENT, "0"), (LOW_QUALITY, "1"),
    )]  # fmt: skip
    write_csv(dataset / "record_info_table.csv", RECORD_HEADER, records)
    pairwise = dataset / "user_behavior" / GOOD / "1"
    pairwise.mkdir(parents=True)
    (pairwise / "rel_gaze_one.csv").write_text(_gaze(GAZE_ONE), encoding="utf-8")
    (pairwise / "rel_gaze_two.csv").write_text(_gaze(GAZE_TWO), encoding="utf-8")
    (pairwise / "rel_mouse_left.csv").write_text(_mouse(MOUSE_LEFT), encoding="utf-8")
    (pairwise / "rel_mouse_right.csv").write_text(_mouse(MOUSE_RIGHT), encoding="utf-8")
    pointwise = dataset / "user_behavior" / GOOD / "2"
    pointwise.mkdir(parents=True)
    (pointwise / "rel_gaze.csv").write_text(_gaze(POINT_GAZE, flag=False), encoding="utf-8")
    (pointwise / "rel_mouse.csv").write_text(_mouse([OFF] * len(POINT_GAZE), flag=False), encoding="utf-8")
    return dataset


def write_behaviour_decided_release(root: Path, workers: int, queries: int, seed: int) -> Path:
    """A release in the published layout whose preferences show only in behaviour: both answers of a
    query are drawn from one vocabulary and length, and the worker reads the preferred one three times as
    long (more gaze samples walking its words) before glancing at the other. Returns ``dataset/``.

    Every worker has one pairwise task of ``queries`` queries with consent; the traces of a task share
    their line times (70 ms apart), each query a block of lines, as the study's page wrote them.
    """
    import random

    rng = random.Random(seed)
    vocabulary = "river stone light garden paper window market silver orange quiet bridge winter".split()
    dataset = root / "dataset"
    dataset.mkdir(parents=True)
    rows, tasks, records = [], [], []
    for w in range(workers):
        worker = f"worker_s{w:03d}"
        records.append([worker, "1", "30", "", "", "", "", ""])
        tasks.append([worker, str(w), "", "", "", "", "", "", "", "", "", "Topic"])
        panels: dict[str, list[str]] = {
            name: [] for name in ("gaze_one", "gaze_two", "mouse_left", "mouse_right")
        }
        t = 0.0
        for q in range(queries):
            answers = [
                " ".join(rng.choice(vocabulary) for _ in range(12)) + f" ({w}.{q}.{k})" for k in (1, 2)
            ]
            preferred = rng.choice((1, 2))
            query = f"Question {q} of worker {w}?"
            labels = ["a", "b", "4.0", "4.0", f"{preferred}.0", "0", ""]
            rows.append([w * 100 + q, worker, str(w), query, *answers, *labels])
            reads = {preferred: 12, 3 - preferred: 4}
            for panel, other in ((1, 2), (2, 1)):
                for step in range(reads[panel]):
                    centre = min(step * 6, len(answers[panel - 1]) - 1)
                    on = _line(100 + centre, 20, window(answers[panel - 1], centre), centre, t, True)
                    off = _line(-1, -1, None, None, t, True)
                    panels["gaze_one"].append(on if panel == 1 else off)
                    panels["gaze_two"].append(on if panel == 2 else off)
                    panels["mouse_left"].append(off)
                    panels["mouse_right"].append(off)
                    t += 70
                t += 70 * other  # a pause between panels
        behaviour = dataset / "user_behavior" / worker / str(w)
        behaviour.mkdir(parents=True)
        for name, lines in panels.items():
            (behaviour / f"rel_{name}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_csv(dataset / "query_logs_table.csv", QUERY_HEADER, rows)
    write_csv(dataset / "task_table.csv", TASK_HEADER, tasks)
    write_csv(dataset / "record_info_table.csv", RECORD_HEADER, records)
    return dataset
