"""The generic pairwise loader, and how bad input in any local file type is reported."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gazerm.data.errors import DataError
from tests.data.util import assert_names, examples, load, only_error, pairs, write_json, write_jsonl

GOOD = {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."}


def test_reads_pairs_with_optional_fields(tmp_path):
    path = write_jsonl(
        tmp_path / "pairs.jsonl",
        [GOOD, {**GOOD, "prompt": "Say hi.", "margin": 2, "source": "mine", "domain": "chat"}],
    )
    first, second = examples(load("generic", path))
    assert (first.prompt, first.responses, pairs(first)) == (
        "Name a colour.",
        ["Blue.", "Seven."],
        [(0, 1, None)],
    )
    assert (first.source, first.domain, first.label_kind, first.context) == ("generic", None, "pairwise", [])
    assert (first.source_file, first.source_row) == (str(path), 1)
    assert (second.prompt, pairs(second), second.source, second.domain, second.source_row) == (
        "Say hi.",
        [(0, 1, 2.0)],
        "mine",
        "chat",
        2,
    )


def test_a_conversation_before_the_prompt_is_its_context(tmp_path):
    turns = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello! How can I help?"}]
    path = write_jsonl(tmp_path / "pairs.jsonl", [{**GOOD, "context": turns}])
    (example,) = examples(load("generic", path))
    assert (example.context, example.prompt) == (turns, "Name a colour.")


@pytest.mark.parametrize(
    ("context", "field", "message"),
    [
        ("Hi.", "context", "expected list"),
        (["Hi."], "context[0]", "expected dict"),
        ([{"role": "user", "content": "Hi."}, {"role": "assistant"}], "context[1].content", "missing"),
        ([{"role": " ", "content": "Hi."}], "context[0].role", "empty"),
    ],
)
def test_a_bad_context_turn_is_named(tmp_path, context, field, message):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{**GOOD, "context": context}])
    error = only_error(load("generic", path))
    assert_names(error, path, 1, field)
    assert message in str(error)


def test_blank_lines_keep_line_numbers(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + json.dumps({**GOOD, "prompt": ""}) + "\n", encoding="utf-8")
    items = load("generic", path)
    assert_names(only_error(items), path, 3, "prompt")


def test_json_array_and_parquet_give_the_same_example(tmp_path):
    json_path = write_json(tmp_path / "pairs.json", [GOOD])
    parquet_path = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist([GOOD]), parquet_path)
    from_json, from_parquet = examples(load("generic", json_path)) + examples(load("generic", parquet_path))
    assert {**from_json.to_row(), "source_file": None} == {**from_parquet.to_row(), "source_file": None}
    assert (from_parquet.source_file, from_parquet.source_row) == (str(parquet_path), 1)


@pytest.mark.parametrize(
    ("record", "field", "message"),
    [
        ({**GOOD, "chosen": "   "}, "chosen", "empty"),
        ({**GOOD, "rejected": None}, "rejected", "missing"),
        ({**GOOD, "prompt": 42}, "prompt", "expected str, got int"),
        ({**GOOD, "margin": "lots"}, "margin", "expected a number"),
        ({**GOOD, "margin": True}, "margin", "expected a number"),
        ({**GOOD, "rejected": "Blue."}, "pairs[0]", "identical"),
    ],
)
def test_bad_record_is_an_error_naming_its_field(tmp_path, record, field, message):
    path = write_jsonl(tmp_path / "pairs.jsonl", [GOOD, record, GOOD])
    items = load("generic", path)
    error = only_error(items)
    assert_names(error, path, 2, field)
    assert message in error.message
    assert [item.source_row for item in items if not isinstance(item, DataError)] == [1, 3]


def test_truncated_jsonl_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD)[:20], encoding="utf-8")
    error = only_error(load("generic", path))
    assert_names(error, path, 2, None)
    assert "truncated line" in error.message


def test_truncated_gzip_file(tmp_path):
    path = tmp_path / "pairs.jsonl.gz"
    payload = gzip.compress(
        "".join(json.dumps({**GOOD, "prompt": f"Q{i}"}) + "\n" for i in range(50)).encode()
    )
    path.write_bytes(payload[: len(payload) // 2])
    items = load("generic", path)
    error = items[-1]
    assert isinstance(error, DataError)
    assert "truncated or corrupt" in error.message
    assert error.row == len(items)  # the line after the last one read whole
    assert_names(error, path, error.row, None)
    assert all(not isinstance(item, DataError) for item in items[:-1])


def test_truncated_json_file_is_one_file_error(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([GOOD, GOOD])[:-10], encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load("generic", path)
    assert_names(caught.value, path, None, None)
    assert "truncated file" in caught.value.message


def test_non_utf8_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(
        json.dumps(GOOD).encode() + b"\n" + b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n'
    )
    error = only_error(load("generic", path))
    assert_names(error, path, 2, None)
    assert "not valid UTF-8" in error.message
