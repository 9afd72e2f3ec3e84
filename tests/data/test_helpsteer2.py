"""HelpSteer2 rows → one rating example per prompt, pairs from helpfulness."""

from __future__ import annotations

import pytest

from gazerm.data.loaders.base import FORMATS
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
