"""Anthropic HH-RLHF transcripts → pairwise examples."""

from __future__ import annotations

import gzip
import json

from gazerm.data.loaders.base import FORMATS
from tests.data.util import assert_names, examples, load, only_error, pairs

PREFIX = "\n\nHuman: What is 2+2?\n\nAssistant: Four.\n\nHuman: And 3+3?\n\nAssistant:"


def record(chosen: str = " Six.", rejected: str = " Nine.") -> dict[str, str]:
    return {"chosen": PREFIX + chosen, "rejected": PREFIX + rejected}


def test_registered_with_the_real_hub_name():
    assert FORMATS["hh_rlhf"].hub_name == "Anthropic/hh-rlhf"


def test_shared_prefix_becomes_context_and_prompt(tmp_path):
    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(gzip.compress((json.dumps(record()) + "\n").encode()))
    (example,) = examples(load("hh_rlhf", path))
    assert example.context == [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "Four."},
    ]
    assert (example.prompt, example.responses) == ("And 3+3?", ["Six.", "Nine."])
    assert (example.label_kind, pairs(example), example.source, example.source_row) == (
        "pairwise",
        [(0, 1, None)],
        "hh_rlhf",
        1,
    )


def test_differing_prefix_names_rejected(tmp_path):
    bad = {"chosen": PREFIX + " Six.", "rejected": PREFIX.replace("Four.", "Five.") + " Nine."}
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(record()) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    items = load("hh_rlhf", path)
    error = only_error(items)
    assert_names(error, path, 2, "rejected")
    assert "differs from 'chosen'" in error.message


def test_unparseable_transcript_names_its_field(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(
        json.dumps({"chosen": "no turns here", "rejected": PREFIX + " x"}) + "\n", encoding="utf-8"
    )
    assert_names(only_error(load("hh_rlhf", path)), path, 1, "chosen")


def test_empty_and_identical_replies_are_errors(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [record(rejected=" "), record(rejected=" Six."), {"chosen": 5, "rejected": PREFIX + " x"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    empty, identical, wrong_type = load("hh_rlhf", path)
    assert_names(empty, path, 1, "rejected")
    assert "reply is empty" in empty.message
    assert_names(identical, path, 2, "pairs[0]")
    assert_names(wrong_type, path, 3, "chosen")
