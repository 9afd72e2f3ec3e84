"""oasst1 message trees → ranking examples (deleted/unranked messages left out), or the reference's pairs."""

from __future__ import annotations

import logging

import pytest

from gazerm.data.errors import DataError
from gazerm.data.loaders.base import FORMATS, Tie
from tests.data.util import assert_names, examples, load, only_error, pairs, write_jsonl


def message(mid: str, parent: str | None, role: str, text: str, rank: int | None = None, **extra) -> dict:
    return {
        "message_id": mid,
        "parent_id": parent,
        "text": text,
        "role": role,
        "lang": "en",
        "rank": rank,
        "deleted": False,
        "review_result": True,
        "message_tree_id": "t1",
        **extra,
    }


TREE = [
    message("p1", None, "prompter", "What is tea?"),  # row 1
    message("a1", "p1", "assistant", "A drink.", rank=1),
    message("a2", "p1", "assistant", "Leaves in hot water.", rank=0),
    message("a3", "p1", "assistant", "Unranked reply."),
    message("a4", "p1", "assistant", "Deleted reply.", rank=2, deleted=True),  # row 5
    message("p2", "a2", "prompter", "Which leaves?"),
    message("a5", "p2", "assistant", "Camellia sinensis.", rank=2),
    message("a6", "p2", "assistant", "Green ones.", rank=0),
    message("a7", "p2", "assistant", "Any.", rank=1),
    message("p3", "a1", "prompter", "Only one reply here."),  # row 10
    message("a8", "p3", "assistant", "Yes.", rank=0),
    message("q1", None, "prompter", "¿Qué es el té?", lang="es"),
    message("b1", "q1", "assistant", "Una bebida.", rank=0, lang="es"),
    message("b2", "q1", "assistant", "Hojas.", rank=1, lang="es"),
    message("x1", None, "prompter", "Spam", deleted=True),  # row 15
    message("x2", "x1", "assistant", "r1", rank=0),
    message("x3", "x1", "assistant", "r2", rank=1),
]


def test_registered_with_the_real_hub_name():
    assert FORMATS["oasst1"].hub_name == "OpenAssistant/oasst1"


def test_ranked_replies_of_each_prompt(tmp_path, caplog):
    path = write_jsonl(tmp_path / "oasst1.jsonl", TREE)
    with caplog.at_level(logging.INFO, logger="gazerm.data.loaders.oasst1"):
        first, second, third = examples(load("oasst1", path))
    assert (first.prompt, first.context, first.source_row) == ("What is tea?", [], 1)
    assert first.responses == ["Leaves in hot water.", "A drink."]
    assert (first.label_kind, first.ranking, pairs(first)) == ("ranking", [0, 1], [(0, 1, None)])
    assert (second.prompt, second.source_row) == ("Which leaves?", 6)
    assert second.context == [
        {"role": "user", "content": "What is tea?"},
        {"role": "assistant", "content": "Leaves in hot water."},
    ]
    assert second.responses == ["Green ones.", "Any.", "Camellia sinensis."]
    assert pairs(second) == [(0, 1, None), (0, 2, None), (1, 2, None)]
    assert (third.prompt, third.responses) == ("¿Qué es el té?", ["Una bebida.", "Hojas."])
    counts = caplog.records[-1].getMessage()
    assert "'deleted messages': 2" in counts
    assert "'unranked replies': 1" in counts
    assert "'prompts with fewer than 2 ranked replies': 1" in counts


def test_lang_filter(tmp_path):
    path = write_jsonl(tmp_path / "oasst1.jsonl", TREE)
    assert [e.prompt for e in examples(load("oasst1", path, lang="es"))] == ["¿Qué es el té?"]
    assert len(examples(load("oasst1", path, lang=["en", "es"]))) == 3


def test_prompt_below_a_deleted_message_is_left_out(tmp_path):
    tree = [
        message("p1", None, "prompter", "Hi"),
        message("a1", "p1", "assistant", "Gone", rank=0, deleted=True),
        message("p2", "a1", "prompter", "Follow-up"),
        message("a2", "p2", "assistant", "One", rank=0),
        message("a3", "p2", "assistant", "Two", rank=1),
    ]
    assert load("oasst1", write_jsonl(tmp_path / "oasst1.jsonl", tree)) == []


def test_missing_parent_and_bad_rows_are_errors(tmp_path):
    tree = [
        message("p2", "lost", "prompter", "Orphan"),
        message("a1", "p2", "assistant", "One", rank=0),
        message("a2", "p2", "assistant", "Two", rank=1),
        message("a3", "p2", "robot", "Three", rank=2),
        message("a1", "p2", "assistant", "Again", rank=3),
    ]
    path = write_jsonl(tmp_path / "oasst1.jsonl", tree)
    role, duplicate, orphan = load("oasst1", path)
    assert_names(role, path, 4, "role")
    assert_names(duplicate, path, 5, "message_id")
    assert_names(orphan, path, 1, "parent_id")
    assert "'lost' is not in the input" in orphan.message


def test_shared_rank_is_an_error(tmp_path):
    tree = [
        message("p1", None, "prompter", "Hi"),
        message("a1", "p1", "assistant", "One", rank=0),
        message("a2", "p1", "assistant", "Two", rank=0),
    ]
    path = write_jsonl(tmp_path / "oasst1.jsonl", tree)
    assert_names(only_error(load("oasst1", path)), path, 1, "rank")


# pairing: reference. One best-vs-worst pair per prompt text, the prompt without its context.
REFERENCE_TREE = [
    *TREE[:9],  # "What is tea?" (best a2, worst a1; a3 unranked, a4 deleted) and "Which leaves?"
    message("p3", "a1", "prompter", "Only one reply here."),  # row 10
    message("a8", "p3", "assistant", "Yes.", rank=0),
    message("a9", "p3", "assistant", "Ja.", rank=1, lang="de"),  # another language: p3 keeps one reply
    *TREE[11:14],  # "¿Qué es el té?" in Spanish
    message("h1", None, "prompter", "Hello", message_tree_id="t3"),  # row 16
    message("r1", "h1", "assistant", "Hi there!", rank=0),
    message("r2", "h1", "assistant", "Hey.", rank=1),
    message("h2", None, "prompter", "Hello", message_tree_id="t4"),  # same text: its replies are pooled
    message("r3", "h2", "assistant", "Hello! How can I help?", rank=0),
    message("r4", "h2", "assistant", "Go away.", rank=2, review_result=False),  # review not looked at
    message("r5", "h2", "assistant", "Yo.", rank=1),
    message("e1", None, "prompter", "Tie?"),  # row 23
    message("t1", "e1", "assistant", "One.", rank=0),
    message("t2", "e1", "assistant", "Two.", rank=0),  # best and worst share a rank: a Tie
    message("x1", None, "prompter", "Spam", deleted=True),
    message("x2", "x1", "assistant", "r1", rank=0),
    message("x3", "x1", "assistant", "r2", rank=1),
]
# (prompt, chosen, rejected, row) in prompt-text order; pairing: reference chooses the better reply
REFERENCE_PAIRS = [
    ("Hello", "Hi there!", "Go away.", 16),
    ("What is tea?", "Leaves in hot water.", "A drink.", 1),
    ("Which leaves?", "Green ones.", "Camellia sinensis.", 6),
]


def test_reference_pairing_gives_best_vs_worst_per_prompt_text(tmp_path, caplog):
    path = write_jsonl(tmp_path / "oasst1.jsonl", REFERENCE_TREE)
    with caplog.at_level(logging.INFO, logger="gazerm.data.loaders.oasst1"):
        items = load("oasst1", path, lang="en", pairing="reference")
    assert [item for item in items if isinstance(item, Tie)] == [Tie(str(path), 23)]
    found = examples([item for item in items if not isinstance(item, Tie)])
    assert [(e.prompt, *e.responses, e.source_row) for e in found] == REFERENCE_PAIRS
    for example in found:
        assert (example.context, example.label_kind, pairs(example)) == ([], "pairwise", [(0, 1, None)])
    counts = caplog.records[-1].getMessage()
    assert "'deleted messages': 2" in counts and "'messages in other languages': 4" in counts
    assert "'unranked replies': 1" in counts
    assert "'prompt texts with fewer than 2 ranked replies': 1" in counts


def test_reference_inverted_reproduces_the_reference_codes_labels(tmp_path):
    path = write_jsonl(tmp_path / "oasst1.jsonl", REFERENCE_TREE)
    items = load("oasst1", path, lang="en", pairing="reference_inverted")
    found = examples([item for item in items if not isinstance(item, Tie)])
    assert [(e.prompt, *e.responses, e.source_row) for e in found] == [
        (prompt, rejected, chosen, row) for prompt, chosen, rejected, row in REFERENCE_PAIRS
    ]


def test_reference_pairing_without_lang_keeps_every_language(tmp_path):
    path = write_jsonl(tmp_path / "oasst1.jsonl", REFERENCE_TREE)
    found = [item for item in load("oasst1", path, pairing="reference") if not isinstance(item, Tie)]
    assert [(e.prompt, *e.responses) for e in examples(found)] == [
        ("Hello", "Hi there!", "Go away."),
        ("Only one reply here.", "Yes.", "Ja."),
        ("What is tea?", "Leaves in hot water.", "A drink."),
        ("Which leaves?", "Green ones.", "Camellia sinensis."),
        ("¿Qué es el té?", "Una bebida.", "Hojas."),
    ]


def test_reference_pair_of_identical_replies_is_a_tie(tmp_path):
    tree = [
        message("h1", None, "prompter", "Hello"),
        message("r1", "h1", "assistant", "Hi!", rank=0),
        message("h2", None, "prompter", "Hello", message_tree_id="t2"),
        message("r2", "h2", "assistant", "Hi!", rank=1),
    ]
    path = write_jsonl(tmp_path / "oasst1.jsonl", tree)
    assert load("oasst1", path, pairing="reference") == [Tie(str(path), 1)]


def test_unknown_pairing_is_an_error_before_reading(tmp_path):
    with pytest.raises(DataError) as caught:
        load("oasst1", tmp_path / "absent.jsonl", pairing="best_vs_worst")
    assert_names(caught.value, tmp_path / "absent.jsonl", None, "options.pairing")
