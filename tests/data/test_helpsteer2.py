"""HelpSteer2 rows → one rating example per prompt: every pair by helpfulness, or the reference's top two."""

from __future__ import annotations

import pytest

from gazerm.data.errors import DataError
from gazerm.data.loaders.base import FORMATS, Tie
from gazerm.data.loaders.helpsteer2 import ATTRIBUTES
from tests.data.util import assert_names, examples, load, only_error, pairs, write_csv, write_jsonl


def row(prompt: str, response: str, *ratings: int) -> dict:
    return {"prompt": prompt, "response": response, **dict(zip(ATTRIBUTES, ratings, strict=True))}


def test_registered_with_the_real_hub_name():
    assert FORMATS["helpsteer2"].hub_name == "nvidia/HelpSteer2"


def test_rows_of_a_prompt_become_one_rating_example(tmp_path):
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [
            row("P1", "good", 4, 4, 4, 2, 1),
            row("P2", "only one", 2, 3, 4, 1, 1),
            row("P1", "poor", 1, 2, 3, 2, 2),
            row("P1", "also poor", 1, 0, 3, 2, 2),
        ],
    )
    first, second = examples(load("helpsteer2", path))
    assert (first.prompt, first.responses, first.source_row) == ("P1", ["good", "poor", "also poor"], 1)
    assert (first.label_kind, first.scores) == ("rating", [4.0, 1.0, 1.0])
    assert first.attribute_names == list(ATTRIBUTES)
    assert first.attribute_scores == [[4, 4, 4, 2, 1], [1, 2, 3, 2, 2], [1, 0, 3, 2, 2]]
    assert pairs(first) == [(0, 1, 3.0), (0, 2, 3.0)]  # equal helpfulness: no pair
    assert (second.prompt, second.responses, second.scores, second.pairs, second.source_row) == (
        "P2",
        ["only one"],
        [2.0],
        [],
        2,
    )


def test_csv_cells_are_read_as_numbers(tmp_path):
    path = write_csv(tmp_path / "hs.csv", ["prompt", "response", *ATTRIBUTES], [["P", "r", 3, 3, 3, 3, 3]])
    (example,) = examples(load("helpsteer2", path))
    assert (example.scores, example.source_row) == ([3.0], 2)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({**row("P", "x", 0, 0, 0, 0, 0), "verbosity": 5}, "verbosity"),
        ({**row("P", "x", 0, 0, 0, 0, 0), "coherence": 1.5}, "coherence"),
        ({**row("P", "x", 0, 0, 0, 0, 0), "helpfulness": None}, "helpfulness"),
        (row(7, "x", 0, 0, 0, 0, 0), "prompt"),
        (row("P", "", 0, 0, 0, 0, 0), "response"),
    ],
)
def test_bad_row_is_reported_with_its_input_row(tmp_path, bad, field):
    path = write_jsonl(
        tmp_path / "train.jsonl", [row("P", "a", 3, 3, 3, 3, 3), bad, row("P", "b", 1, 1, 1, 1, 1)]
    )
    items = load("helpsteer2", path)
    error = only_error(items)
    assert_names(error, path, 2, field)
    (example,) = [item for item in items if item is not error]
    assert (example.responses, pairs(example)) == (["a", "b"], [(0, 1, 2.0)])


# pairing: reference. Top two by helpfulness, ties and lone responses give no pair (a Tie).
REFERENCE_ROWS = [
    row("P1", "a", 2, 3, 3, 1, 1),  # row 1
    row("P1", "b", 4, 4, 4, 2, 2),
    row("P2", "only one", 3, 3, 3, 3, 3),  # a single response: no pair
    row("P1", "c", 3, 2, 4, 1, 0),  # first of the two 3s: the rejected one
    row("P3", "x", 3, 3, 3, 3, 3),  # row 5; P3's top two are equally helpful: no pair
    row("P3", "y", 3, 1, 1, 1, 1),
    row("P1", "d", 3, 4, 4, 4, 4),
    row("P4", "m", 1, 0, 0, 0, 0),
    row("P4", "n", 0, 4, 4, 4, 4),  # the other attributes do not count
    row("P5", "p", 4, 1, 1, 1, 1),  # row 10; P5's top two tie although "r" is less helpful
    row("P5", "q", 4, 1, 1, 1, 1),
    row("P5", "r", 3, 1, 1, 1, 1),
]


def test_reference_pairing_takes_the_two_most_helpful_responses(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", REFERENCE_ROWS)
    items = load("helpsteer2", path, pairing="reference")
    assert [item for item in items if isinstance(item, Tie)] == [Tie(str(path), r) for r in (3, 5, 10)]
    first, second = examples([item for item in items if not isinstance(item, Tie)])
    assert (first.prompt, first.responses, first.source_row) == ("P1", ["b", "c"], 1)
    assert pairs(first) == [(0, 1, 1.0)]
    assert (first.label_kind, first.scores, first.attribute_scores) == (
        "rating",
        [4.0, 3.0],
        [[4, 4, 4, 2, 2], [3, 2, 4, 1, 0]],
    )
    assert (second.prompt, second.responses, second.source_row) == ("P4", ["m", "n"], 8)
    assert pairs(second) == [(0, 1, 1.0)]


def test_default_pairing_is_every_pair_of_every_prompt(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", REFERENCE_ROWS)
    by_prompt = {example.prompt: example for example in examples(load("helpsteer2", path))}
    assert by_prompt == {e.prompt: e for e in examples(load("helpsteer2", path, pairing="all"))}
    assert by_prompt["P1"].responses == ["a", "b", "c", "d"]
    assert len(pairs(by_prompt["P1"])) == 5 and pairs(by_prompt["P2"]) == []


def test_unknown_pairing_is_an_error_before_reading(tmp_path):
    with pytest.raises(DataError) as caught:
        load("helpsteer2", tmp_path / "absent.jsonl", pairing="top2")
    assert_names(caught.value, tmp_path / "absent.jsonl", None, "options.pairing")
    assert "'all' or 'reference'" in caught.value.message
