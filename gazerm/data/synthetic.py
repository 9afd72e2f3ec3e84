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
