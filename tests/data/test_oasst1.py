"""oasst1 message trees → ranking examples, with deleted/unranked messages left out by rule."""

from __future__ import annotations

import logging

from gazerm.data.loaders.base import FORMATS
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
