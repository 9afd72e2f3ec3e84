"""Text-score lists: any number of scored responses per prompt."""

from __future__ import annotations

import pytest

from tests.data.util import assert_names, examples, load, only_error, pairs, write_jsonl

LIST = {
    "prompt": "Explain rain.",
    "responses": [
        {"text": "Water falls.", "score": 1},
        {"text": "Clouds.", "score": 3},
        {"text": "?", "score": 1},
    ],
    "domain": "academy",
}


def test_a_list_keeps_every_response_and_its_score(tmp_path):
    (example,) = examples(load("text_score", write_jsonl(tmp_path / "lists.jsonl", [LIST])))
    assert example.responses == ["Water falls.", "Clouds.", "?"]
    assert example.scores == [1.0, 3.0, 1.0]
    assert (example.label_kind, example.source, example.domain) == ("rating", "text_score", "academy")
    assert pairs(example) == [(1, 0, 2.0), (1, 2, 2.0)]  # the tie gives no pair


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({**LIST, "responses": [{"text": "Only one.", "score": 1}]}, "responses"),
        ({**LIST, "responses": [{"text": "A.", "score": 1}, {"text": " ", "score": 2}]}, "responses[1].text"),
        (
            {**LIST, "responses": [{"text": "A.", "score": 1}, {"text": "B.", "score": "high"}]},
            "responses[1].score",
        ),
        ({**LIST, "responses": [{"text": "A.", "score": 1}, "B."]}, "responses[1]"),
        ({**LIST, "prompt": ""}, "prompt"),
    ],
)
def test_bad_lists_name_row_and_field(tmp_path, record, field):
    path = write_jsonl(tmp_path / "lists.jsonl", [LIST, record])
    assert_names(only_error(load("text_score", path)), path, 2, field)
