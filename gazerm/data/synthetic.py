"""A synthetic preference set whose rule is known, made locally for the quickstart and the tests.

The rule is *readability*: the chosen response is built mostly from short, frequent words,
the rejected one mostly from long, rare words, on the same prompt. Humans read such text
with fewer and shorter fixations, so the rule is visible both in the text and in the gaze
features the reading model predicts — a reward model must reach well above chance on it,
and gaze fusion has a real signal to use.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from gazerm.features.implicit import DEFAULT_PAGE_HEIGHT_PX

EASY_WORDS = (
    "the it is a to and we you can do this that be good make time way use get see go one new "
    "help work well now just so like day home all more try keep fast easy clear best step"
).split()
HARD_WORDS = (
    "notwithstanding epistemological circumlocution heterogeneous indefatigable juxtaposition "
    "obfuscation perfunctory quintessential recalcitrant sesquipedalian surreptitious ubiquitous "
    "vicissitudes antidisestablishment idiosyncratic incontrovertible magnanimous ostentatious "
    "parsimonious perspicacious pusillanimous unequivocally verisimilitude"
).split()
TOPICS = (
    "bread",
    "taxes",
    "running",
    "python",
    "gardening",
    "sleep",
    "chess",
    "painting",
    "budgets",
    "travel",
)
PROMPTS = (
    "How do I get better at {}?",
    "Can you explain {} to a beginner?",
    "What should I know about {}?",
    "Give me one tip about {}.",
)


def _response(rng: random.Random, easy_share: float, topic: str) -> str:
    words = [
        rng.choice(EASY_WORDS if rng.random() < easy_share else HARD_WORDS) for _ in range(rng.randint(8, 16))
    ]
    words.insert(rng.randint(0, len(words)), topic)
    return " ".join(words).capitalize() + "."


def readability_preferences(
    n: int, seed: int = 0, easy_share: tuple[float, float] = (0.85, 0.15)
) -> list[dict]:
    """``n`` records in the generic format: prompt, chosen (easy to read), rejected (hard to read)."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        topic = rng.choice(TOPICS)
        records.append(
            {
                "prompt": rng.choice(PROMPTS).format(topic) + f" (#{rng.randrange(10**6)})",
                "chosen": _response(rng, easy_share[0], topic),
                "rejected": _response(rng, easy_share[1], topic),
            }
        )
    return records


def _write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    return path


def write_readability_preferences(path: str | Path, n: int = 2000, seed: int = 0) -> Path:
    """Write the records as JSONL (readable by the ``generic`` loader) and return the path."""
    return _write_jsonl(path, readability_preferences(n, seed))


def write_readability_ratings(path: str | Path, n: int = 500, seed: int = 0) -> Path:
    """The same rule as HelpSteer2-style ratings (JSONL for the ``helpsteer2`` loader): each prompt's
    easy response is rated 4 on every attribute, its hard one 0, so regression heads have a known target."""
    attributes = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
    return _write_jsonl(
        path,
        (
            {"prompt": record["prompt"], "response": record[side], **dict.fromkeys(attributes, rating)}
            for record in readability_preferences(n, seed)
            for side, rating in (("chosen", 4), ("rejected", 0))
        ),
    )


def write_readability_lists(path: str | Path, n: int = 300, size: int = 4, seed: int = 0) -> Path:
    """The rule as ranked lists (JSONL for the ``text_score`` loader): ``size`` responses per prompt, the
    share of easy words falling from 0.9 to 0.1 down the list and the score (``size - 1`` … 0) with it."""
    rng = random.Random(seed)
    shares = [0.9 - 0.8 * k / (size - 1) for k in range(size)]
    records = []
    for _ in range(n):
        topic = rng.choice(TOPICS)
        responses = [
            {"text": _response(rng, share, topic), "score": size - 1 - k} for k, share in enumerate(shares)
        ]
        rng.shuffle(responses)  # list order must not give the ranking away
        prompt = rng.choice(PROMPTS).format(topic) + f" (#{rng.randrange(10**6)})"
        records.append({"prompt": prompt, "responses": responses})
    return _write_jsonl(path, records)


# The implicit-feedback set: per view, the chosen response's engagement is twice the rejected one's.
VIEW_DWELL_MS = 5000.0
ENGAGEMENT = {"chosen": 2.0, "rejected": 1.0}
RAW_GAZE_SHARE = 0.25


def write_implicit_feedback_set(directory: str | Path, n: int = 1000, seed: int = 0) -> tuple[Path, Path]:
    """``(pairs.jsonl, sessions.jsonl)`` in ``directory``: generic-format pairs whose texts carry no
    signal (chosen and rejected drawn alike: same word pool, easy share and length) and a session log
    in which people engaged twice as much with the chosen response (dwell, scroll depth, fixations,
    a steadier mouse), each view with ~20% noise. Text alone gives ~50% accuracy; the behaviour
    features a high one. A quarter of the views carry raw webcam gaze, the rest detected fixations."""
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    pairs = [_alike_pair(rng) for _ in range(n)]
    views = [
        _session_view(np_rng, f"p{i}-{side}-{k}", pair["prompt"], pair[side], ENGAGEMENT[side])
        for i, pair in enumerate(pairs)
        for side in ENGAGEMENT
        for k in range(rng.randint(1, 2))
    ]
    directory = Path(directory)
    return _write_jsonl(directory / "pairs.jsonl", pairs), _write_jsonl(directory / "sessions.jsonl", views)


# The gaze-decided set: how a reader's eyes move over a response they find fluent or laboured.
READING = {
    "chosen": {"skip": 0.35, "mean_ms": 180.0, "refixate": 0.1, "regress": 0.02},
    "rejected": {"skip": 0.05, "mean_ms": 300.0, "refixate": 0.5, "regress": 0.25},
}


def write_gaze_decided_set(
    directory: str | Path, n: int = 600, seed: int = 0, readers: int = 2
) -> tuple[Path, Path]:
    """``(pairs.jsonl, fixations.parquet)`` in ``directory``: generic-format pairs whose texts carry no
    signal (chosen and rejected drawn alike) and an eye-tracking study of them (``gaze.predictor:
    recorded``) in which ``readers`` people read the chosen response fluently (more skips, shorter
    fixations, few refixations and regressions) and the rejected one laboriously. Only the gaze tells
    the two apart: text alone gives ~50% accuracy."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    pairs, fixations = [], []
    for _ in range(n):
        pair = _alike_pair(rng)
        pairs.append(pair)
        for side, reading in READING.items():
            words = len(pair[side].split())
            for reader in range(readers):
                for onset, duration, word in _reading(np_rng, words, **reading):
                    fixations.append((pair[side], f"r{reader}", onset, duration, word))
    directory = Path(directory)
    columns = list(zip(*fixations, strict=True))
    table = pa.table(dict(zip(("text", "reader", "onset", "duration", "word_idx"), columns, strict=True)))
    pq.write_table(table, directory / "fixations.parquet")
    return _write_jsonl(directory / "pairs.jsonl", pairs), directory / "fixations.parquet"


def _reading(
    rng: np.random.Generator, words: int, skip: float, mean_ms: float, refixate: float, regress: float
) -> list[tuple[float, float, int]]:
    """(onset ms, duration ms, word index) of one reading, left to right, with skips, refixations and
    regressions to an earlier word; saccades take 30 ms."""
    fixations, clock = [], 0.0

    def fixate(word: int) -> None:
        nonlocal clock
        duration = float(np.round(rng.gamma(4.0, mean_ms / 4.0)))
        fixations.append((clock, duration, word))
        clock += duration + 30.0

    for word in range(words):
        if rng.random() < skip:
            continue
        fixate(word)
        if rng.random() < refixate:
            fixate(word)
        if word and rng.random() < regress:
            fixate(int(rng.integers(0, word)))
    return fixations


def _alike_pair(rng: random.Random) -> dict[str, str]:
    """A prompt with two responses drawn alike (same word pool, easy share and length): no text signal."""
    topic = rng.choice(TOPICS)
    prompt = rng.choice(PROMPTS).format(topic) + f" (#{rng.randrange(10**6)})"
    return {"prompt": prompt, "chosen": _response(rng, 0.5, topic), "rejected": _response(rng, 0.5, topic)}


def _session_view(
    rng: np.random.Generator, session_id: str, prompt: str, response: str, engagement: float
) -> dict:
    """One session log record (``gazerm.features.implicit`` format) of a reader this engaged."""

    def noisy(value: float) -> float:
        return value * max(0.3, rng.normal(1.0, 0.2))

    start = float(rng.integers(0, 10**7))
    end = start + round(noisy(VIEW_DWELL_MS * engagement))
    page_height = float(rng.choice([1200.0, 1600.0, DEFAULT_PAGE_HEIGHT_PX]))
    depth = min(1.0, noisy(0.4 * engagement)) * page_height
    scroll_t = _times(rng, 1 + rng.poisson(3 * engagement), start, end)
    scroll_y = np.sort(rng.uniform(0.05, 1.0, len(scroll_t)))
    mouse_t = _times(rng, 2 + rng.poisson(5 * (end - start) / 1000), start, end)
    resting = rng.random(len(mouse_t)) < 0.25 * engagement  # a steadier hand rests more often
    steps = rng.normal(0, 60 / engagement, (len(mouse_t), 2)) * np.where(resting, 0.01, 1.0)[:, None]
    mouse_xy = np.clip(np.array([640.0, 400.0]) + np.cumsum(steps, axis=0), 0, [1280, 800])
    record = {
        "session_id": session_id,
        "prompt": prompt,
        "response": response,
        "view": {"start_ms": start, "end_ms": end},
        "scroll": _objects(("t", "y"), scroll_t, scroll_y / scroll_y[-1] * depth),
        "mouse": _objects(("t", "x", "y"), mouse_t, *mouse_xy.T),
    }
    if page_height != DEFAULT_PAGE_HEIGHT_PX:
        record["page_height"] = page_height
    onsets, durations, locations = _fixations(rng, start, end, mean_ms=160 + 40 * engagement)
    if rng.random() < RAW_GAZE_SHARE:
        record["gaze"] = _webcam_samples(rng, start, end, onsets, locations)
    else:
        record["fixations"] = _objects(("onset", "duration", "x", "y"), onsets, durations, *locations.T)
    return record


def _times(rng: np.random.Generator, n: int, start: float, end: float) -> np.ndarray:
    """Up to ``n`` increasing timestamps (0.1 ms) inside ``[start, end]``."""
    return np.unique(np.round(rng.uniform(start, end, n), 1))


def _fixations(
    rng: np.random.Generator, start: float, end: float, mean_ms: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reading fixations (gamma durations, 30 ms saccades) from ``start`` until the view ends."""
    most = int((end - start) / 30) + 1
    durations = np.round(rng.gamma(4.0, mean_ms / 4.0, most))
    onsets = start + np.concatenate([[0.0], np.cumsum(durations + 30)[:-1]])
    inside = onsets + durations <= end
    locations = np.column_stack([rng.uniform(50, 1200, most), rng.uniform(100, 700, most)])
    return onsets[inside], durations[inside], locations[inside]


def _webcam_samples(
    rng: np.random.Generator, start: float, end: float, onsets: np.ndarray, locations: np.ndarray
) -> list[dict]:
    """~30 Hz noisy samples at the location of the fixation under way (kept through the saccade after it)."""
    times = start + np.cumsum(rng.uniform(30, 37, int((end - start) / 30) + 1))
    if not len(onsets):
        return []
    times = times[times <= end]
    current = np.maximum(np.searchsorted(onsets, times, side="right") - 1, 0)
    xy = locations[current] + rng.normal(0, 8, (len(times), 2))
    return _objects(("t", "x", "y"), times, *xy.T)


def _objects(keys: tuple[str, ...], *columns: Iterable[float]) -> list[dict]:
    """JSON objects from equal-length columns, one per row, values rounded to 0.1."""
    rows = np.round(np.column_stack([np.asarray(column, dtype=float) for column in columns]), 1).tolist()
    return [dict(zip(keys, row, strict=True)) for row in rows]
