"""The sparse-feedback release's files, written here in their exact published layouts: headerless CSVs as
the study's scripts append them with ``csv.writer`` (pandas' NaN for a missing input written "nan"), and
the RM JSON ``{alpaca_prompt: {"sentences": [[preferred, other], ...]}}`` as ``json.dump`` writes it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import gazerm.data.sources as sources
from gazerm.data.config import GazeSpec, PrepareConfig, SourceSpec
from gazerm.data.errors import DataError
from gazerm.data.loaders.base import Tie
from gazerm.data.prepare import prepare
from gazerm.data.sources import iter_source
from tests.data.util import assert_names, examples, load, pairs, write_headerless_csv

BOIL, RAIN = "How do I boil an egg?", "Summarize the passage."
PASSAGE = "Rain is water falling from clouds."
RAIN_PROMPT = f"{RAIN}\n\nInput:\n{PASSAGE}"


def alpaca(instruction: str, input: str = "") -> str:
    """An RM JSON key: the Alpaca template the study's conversion script wraps a prompt in."""
    if not input:
        return (
            "Below is an instruction that describes a task. Write a response that appropriately "
            f"completes the request.\n\n### Instruction:\n{instruction}\n\n### Response: "
        )
    return (
        "Below is an instruction that describes a task, paired with an input that provides further "
        "context. Write a response that appropriately completes the request.\n\n"
        f"### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response: "
    )


def write_rm_json(path: Path, document: dict) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def _kinds(items: list) -> list[str]:
    return [type(item).__name__ for item in items]


# ratings: instruction, input, response, rating


def test_ratings_group_a_prompts_rows_and_average_a_response_rated_twice(tmp_path):
    path = write_headerless_csv(
        tmp_path / "feedback_ratings.csv",
        [
            [BOIL, "nan", "Boil it for nine minutes.\nThen cool it.", 7],  # lines 1-2
            [RAIN, PASSAGE, "Water from clouds.", 6],
            [BOIL, "nan", "Eggs are ubiquitous.", 2],
            [BOIL, "nan", "Boil it for nine minutes.\nThen cool it.", 5],  # lines 5-6
        ],
    )
    boil, rain = examples(load("sparse_feedback_ratings", path))
    assert (boil.prompt, boil.source, boil.label_kind, boil.source_row) == (
        BOIL,
        "sparse_feedback_ratings",
        "rating",
        2,  # a CSV row is named by the line its record ends on
    )
    assert boil.responses == ["Boil it for nine minutes.\nThen cool it.", "Eggs are ubiquitous."]
    assert (boil.scores, pairs(boil)) == ([6.0, 2.0], [(0, 1, 4.0)])
    assert (rain.prompt, rain.responses, rain.pairs, rain.source_row) == (
        RAIN_PROMPT,
        ["Water from clouds."],
        [],
        3,
    )


def test_blank_or_nan_input_leaves_the_instruction_alone(tmp_path):
    path = write_headerless_csv(
        tmp_path / "feedback_ratings.csv", [[BOIL, "", "a", 3], [BOIL, "nan", "b", 4], [BOIL, " ", "c", 5]]
    )
    (example,) = examples(load("sparse_feedback_ratings", path))
    assert (example.prompt, example.responses) == (BOIL, ["a", "b", "c"])


@pytest.mark.parametrize("rating", ["8", "0", "4.5", "good"])
def test_a_rating_outside_the_studys_1_to_7_scale_names_its_row(tmp_path, rating):
    path = write_headerless_csv(
        tmp_path / "feedback_ratings.csv", [[BOIL, "nan", "a", 7], [BOIL, "nan", "b", rating]]
    )
    items = load("sparse_feedback_ratings", path)
    assert _kinds(items) == ["DataError", "PreferenceExample"]
    assert_names(items[0], path, 2, "rating")
    assert items[1].responses == ["a"]


def test_a_ratings_row_without_instruction_or_with_too_few_columns(tmp_path):
    path = tmp_path / "feedback_ratings.csv"
    path.write_text(f'"",nan,a,4\r\n{BOIL},nan,b\r\n{BOIL},nan,c,4\r\n', encoding="utf-8")
    blank, ragged, example = load("sparse_feedback_ratings", path)
    assert_names(blank, path, 1, "instruction")
    assert_names(ragged, path, 2, None)
    assert "expected 4 columns" in ragged.message
    assert example.responses == ["c"]


def test_a_header_naming_the_columns_is_not_a_record(tmp_path):
    path = write_headerless_csv(
        tmp_path / "feedback_ratings.csv",
        [["instruction", "input", "response", "rating"], [BOIL, "nan", "a", 4]],
    )
    (example,) = examples(load("sparse_feedback_ratings", path))
    assert (example.responses, example.source_row) == (["a"], 2)


# rankings: instruction, input, response1, response2, (a)/(b)/equal


def test_rankings_a_and_b_are_pairs_and_equal_or_identical_responses_are_ties(tmp_path):
    path = write_headerless_csv(
        tmp_path / "feedback_rankings.csv",
        [
            [BOIL, "nan", "Nine minutes.", 'Eggs, "ubiquitous".', "(a)"],
            [RAIN, PASSAGE, "A mood.", "Water from clouds.", "(b)"],
            [BOIL, "nan", "Nine minutes.", "Boil it.", "equal"],
            [BOIL, "nan", "Boil it.", "Boil it.", "(a)"],  # no preference between one text and itself
        ],
    )
    items = load("sparse_feedback_rankings", path)
    assert _kinds(items) == ["PreferenceExample", "PreferenceExample", "Tie", "Tie"]
    first, second, *ties = items
    assert (first.prompt, first.responses, pairs(first), first.source_row) == (
        BOIL,
        ["Nine minutes.", 'Eggs, "ubiquitous".'],
        [(0, 1, None)],
        1,
    )
    assert (second.prompt, second.responses, pairs(second)) == (
        RAIN_PROMPT,
        ["A mood.", "Water from clouds."],
        [(1, 0, None)],
    )
    assert (second.source, second.label_kind) == ("sparse_feedback_rankings", "pairwise")
    assert ties == [Tie(str(path), 3), Tie(str(path), 4)]


@pytest.mark.parametrize("preference", ["(c)", "a", "(equal)", ""])
def test_an_unknown_preference_names_its_row(tmp_path, preference):
    path = write_headerless_csv(
        tmp_path / "feedback_rankings.csv",
        [[BOIL, "nan", "x", "y", "(b)"], [BOIL, "nan", "x", "y", preference]],
    )
    example, error = load("sparse_feedback_rankings", path)
    assert pairs(example) == [(1, 0, None)]
    assert_names(error, path, 2, "preference")


# RM JSON: {alpaca_prompt: {"sentences": [[preferred, other], ...]}}


def test_rm_json_prompt_holds_its_pairs_over_distinct_responses(tmp_path):
    path = write_rm_json(
        tmp_path / "feedback_rankings_for_rm.json",
        {
            alpaca(RAIN, PASSAGE): {
                "sentences": [["Water from clouds.", "A mood."], ["Weather.", "A mood."]]
            },
            alpaca(BOIL): {"sentences": [["Boil it.", "Boil it."], ["Nine minutes.", "Boil it."]]},
        },
    )
    rain, tie, boil = load("sparse_feedback_rm_json", path)
    assert (rain.prompt, rain.source, rain.label_kind, rain.source_row) == (
        RAIN_PROMPT,
        "sparse_feedback_rm_json",
        "pairwise",
        1,
    )
    assert rain.responses == ["Water from clouds.", "A mood.", "Weather."]
    assert pairs(rain) == [(0, 1, None), (2, 1, None)]
    assert tie == Tie(str(path), 2)
    assert (boil.prompt, boil.responses, pairs(boil)) == (BOIL, ["Boil it.", "Nine minutes."], [(1, 0, None)])


def test_rm_json_and_rankings_csv_give_one_item_the_same_prompt(tmp_path):
    """``gazerm consistency`` matches the formats by prompt text, so the Alpaca key must unwrap to it."""
    csv_path = write_headerless_csv(
        tmp_path / "r.csv", [[RAIN, PASSAGE, "x", "y", "(a)"], [BOIL, "nan", "x", "y", "(a)"]]
    )
    json_path = write_rm_json(
        tmp_path / "r.json",
        {alpaca(RAIN, PASSAGE): {"sentences": [["x", "y"]]}, alpaca(BOIL): {"sentences": [["x", "y"]]}},
    )
    from_csv = [e.prompt for e in load("sparse_feedback_rankings", csv_path)]
    assert from_csv == [e.prompt for e in load("sparse_feedback_rm_json", json_path)] == [RAIN_PROMPT, BOIL]


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ({"sentences": [["a", "b", "c"]]}, "sentences[0]", "expected [preferred, other], got 3 texts"),
        ({"sentences": [["a", "b"], ["a", 7]]}, "sentences[1][1]", "expected str"),
        ({"sentences": [["a", ""]]}, "sentences[0][1]", "empty"),
        ({"sentences": []}, "sentences", "no pairs"),
        ({"pairs": [["a", "b"]]}, "sentences", "missing"),
        ({"sentences": "a > b"}, "sentences", "expected list"),
    ],
)
def test_a_malformed_rm_json_item_names_its_row_and_field(tmp_path, value, field, message):
    path = write_rm_json(
        tmp_path / "rm.json", {alpaca(BOIL): {"sentences": [["x", "y"]]}, alpaca(RAIN): value}
    )
    example, error = load("sparse_feedback_rm_json", path)
    assert example.responses == ["x", "y"]
    assert_names(error, path, 2, field)
    assert message in error.message


def test_an_rm_json_key_that_is_no_alpaca_prompt_or_a_value_that_is_no_object(tmp_path):
    path = write_rm_json(
        tmp_path / "rm.json", {BOIL: {"sentences": [["x", "y"]]}, alpaca(RAIN): [["x", "y"]]}
    )
    not_alpaca, not_object = load("sparse_feedback_rm_json", path)
    assert_names(not_alpaca, path, 1, "prompt")
    assert "not an Alpaca instruction prompt" in not_alpaca.message
    assert_names(not_object, path, 2, None)
    assert "expected a JSON object, got list" in not_object.message


def test_an_rm_json_array_is_an_unreadable_file(tmp_path):
    path = write_rm_json(tmp_path / "rm.json", [{"sentences": [["x", "y"]]}])  # type: ignore[arg-type]
    with pytest.raises(DataError) as caught:
        load("sparse_feedback_rm_json", path)
    assert_names(caught.value, path, None, None)
    assert "keyed by prompt" in caught.value.message


# the hub dataset: its raw files are downloaded and read like local ones


@pytest.fixture
def downloads(tmp_path, monkeypatch) -> list[tuple[str, str]]:
    """``download_hub_file`` answered from ``tmp_path``: each file written in its real layout."""
    calls: list[tuple[str, str]] = []
    local = {
        "absolute_gpt_3.5_turbo_score.csv": lambda p: write_headerless_csv(p, [[BOIL, "nan", "a", 5]]),
        "relative_gpt_3.5_turbo_feedback.csv": lambda p: write_headerless_csv(
            p, [[BOIL, "nan", "a", "b", "(b)"]]
        ),
        "val_relative_feedback_for_rm.json": lambda p: write_rm_json(
            p, {alpaca(BOIL): {"sentences": [["a", "b"]]}}
        ),
    }

    def fake_download(name: str, filename: str) -> Path:
        calls.append((name, filename))
        return local[Path(filename).name](tmp_path / Path(filename).name)

    monkeypatch.setattr(sources, "download_hub_file", fake_download)
    return calls


def test_without_a_path_each_format_reads_its_file_of_the_hub_dataset(downloads):
    (rating,) = examples(list(iter_source("sparse_feedback_ratings")))
    (ranking,) = examples(list(iter_source("sparse_feedback_rankings")))
    (rm,) = examples(list(iter_source("sparse_feedback_rm_json", split="validation")))
    assert [rating.responses, pairs(ranking), pairs(rm)] == [["a"], [(1, 0, None)], [(0, 1, None)]]
    assert downloads == [
        ("hbXNov/sparse_feedback", "absolute_gpt_3.5_turbo_score.csv"),
        ("hbXNov/sparse_feedback", "relative_gpt_3.5_turbo_feedback.csv"),
        (
            "hbXNov/sparse_feedback",
            "sample_relative_feedback_gpt3.5_turbo_with_trainval_split/val_relative_feedback_for_rm.json",
        ),
    ]


def test_a_split_the_hub_dataset_has_no_file_for_is_an_error(downloads):
    with pytest.raises(DataError) as caught:
        next(iter_source("sparse_feedback_ratings", split="validation"))
    assert (caught.value.file, caught.value.field) == ("sparse_feedback_ratings", "split")
    assert "splits: ['train']" in caught.value.message
    assert downloads == []


# prepare: every file's ties and bad rows are counted, none vanishes


def test_prepare_counts_examples_ties_and_quarantined_rows_of_each_format(tmp_path, caplog):
    ratings = write_headerless_csv(tmp_path / "ratings.csv", [[BOIL, "nan", "a", 6], [BOIL, "nan", "b", 9]])
    rankings = write_headerless_csv(
        tmp_path / "rankings.csv", [[BOIL, "nan", "a", "b", "(a)"], [BOIL, "nan", "a", "b", "equal"]]
    )
    rm_json = write_rm_json(tmp_path / "rm.json", {alpaca(BOIL): {"sentences": [["a", "b"], ["c", "c"]]}})
    config = PrepareConfig(
        sources=[
            SourceSpec(format="sparse_feedback_ratings", path=str(ratings)),
            SourceSpec(format="sparse_feedback_rankings", path=str(rankings)),
            SourceSpec(format="sparse_feedback_rm_json", path=str(rm_json)),
        ],
        output_dir=str(tmp_path / "out"),
        gaze=GazeSpec(predictor="none"),
        on_error="quarantine",
    )
    with caplog.at_level(logging.INFO, logger="gazerm.data.prepare"):
        manifest = prepare(config)
    counts = [(s["examples"], s["ties"], s["quarantined"]) for s in manifest.sources]
    assert counts == [(1, 0, 1), (1, 1, 0), (1, 1, 0)]
    assert f"{rankings}: 1 examples, 1 ties, 0 quarantined" in caplog.text
