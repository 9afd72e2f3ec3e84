"""Sparse-feedback CSVs: ratings grouped by prompt, and A/B rankings."""

from __future__ import annotations

import pytest

from gazerm.data.errors import DataError
from tests.data.util import assert_names, examples, load, only_error, pairs, write_csv

RANKING_HEADER = ["prompt", "response_a", "response_b", "preference"]


def test_ratings_group_by_prompt_and_average_repeats(tmp_path):
    path = write_csv(
        tmp_path / "ratings.csv",
        ["prompt", "response", "rating"],
        [["Q1", "x", 7], ["Q2", "z", 3], ["Q1", "y", 2], ["Q1", "x", 5], ["Q1", "w", 2.0]],
    )
    first, second = examples(load("sparse_ratings", path))
    assert (first.prompt, first.responses, first.scores) == ("Q1", ["x", "y", "w"], [6.0, 2.0, 2.0])
    assert (first.label_kind, first.source_row, first.source) == ("rating", 2, "sparse_ratings")
    assert pairs(first) == [(0, 1, 4.0), (0, 2, 4.0)]
    assert (second.prompt, second.responses, second.pairs, second.source_row) == ("Q2", ["z"], [], 3)


def test_rating_that_is_not_a_number(tmp_path):
    path = write_csv(
        tmp_path / "ratings.csv", ["prompt", "response", "rating"], [["Q", "a", "7"], ["Q", "b", "good"]]
    )
    error = only_error(load("sparse_ratings", path))
    assert_names(error, path, 3, "rating")
    assert "expected a number" in error.message


def test_rankings_follow_the_preference(tmp_path):
    path = write_csv(
        tmp_path / "rankings.csv", RANKING_HEADER, [["Q1", "a1", "b1", "A"], ["Q2", "a2", "b2", " b "]]
    )
    first, second = examples(load("sparse_rankings", path))
    assert (first.prompt, first.responses, pairs(first), first.source_row) == (
        "Q1",
        ["a1", "b1"],
        [(0, 1, None)],
        2,
    )
    assert (second.responses, pairs(second), second.label_kind) == (["a2", "b2"], [(1, 0, None)], "pairwise")


def test_tie_and_unknown_preference_are_errors(tmp_path):
    path = write_csv(
        tmp_path / "rankings.csv", RANKING_HEADER, [["Q", "a", "b", "equal"], ["Q", "a", "b", "C"]]
    )
    tie, unknown = load("sparse_rankings", path)
    assert_names(tie, path, 2, "preference")
    assert tie.message == "tie: no preference"
    assert_names(unknown, path, 3, "preference")


def test_ragged_csv_row(tmp_path):
    path = tmp_path / "rankings.csv"
    path.write_text("prompt,response_a,response_b,preference\nQ,a,b,A\nQ,a\n", encoding="utf-8")
    items = load("sparse_rankings", path)
    error = only_error(items)
    assert_names(error, path, 3, None)
    assert "ragged row" in error.message


def test_non_utf8_csv_fails_the_file_naming_the_line(tmp_path):
    path = tmp_path / "rankings.csv"
    path.write_bytes(b"prompt,response_a,response_b,preference\nQ,a,b,A\nQ,caf\xe9,b,B\n")
    with pytest.raises(DataError) as caught:
        load("sparse_rankings", path)
    assert_names(caught.value, path, 3, None)
    assert "not valid UTF-8" in caught.value.message
