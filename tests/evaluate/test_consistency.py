"""The ratings-vs-rankings consistency report on a hand-built prepared split, with untrained saved models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gazerm.cli import app
from gazerm.data.config import GazeSpec, PrepareConfig, SourceSpec
from gazerm.data.prepare import prepare
from gazerm.evaluate.consistency import (
    ALL_SOURCES,
    ConsistencyReport,
    compare,
    consistency_report,
    model_agreement,
)
from gazerm.evaluate.offline import read_split
from gazerm.model.inputs import InputSpec
from gazerm.model.io import load_reward_model, save_reward_model
from gazerm.score import RewardScorer
from tests.conftest import save_random_model
from tests.data.util import write_headerless_csv

RATINGS = [  # the release's headerless ratings CSV: instruction, input ("nan": none), response, rating
    ("How do I boil an egg?", "nan", "Put it in boiling water for nine minutes.", 5),
    ("How do I boil an egg?", "nan", "Eggs are ubiquitous.", 3),
    ("How do I boil an egg?", "nan", "Boil it.", 3),
    ("Name a prime.", "nan", "Seven is prime.", 2),
    ("Name a prime.", "nan", "Two is the only even prime.", 6),
]
RANKINGS = [  # the release's headerless rankings CSV: instruction, input, response1, response2, preference
    (
        "How do I boil an egg?",
        "nan",
        "Put it in boiling water for nine minutes.",
        "Eggs are ubiquitous.",
        "(a)",
    ),
    ("How do I boil an egg?", "nan", "Eggs are ubiquitous.", "Boil it.", "(b)"),  # the ratings tie
    ("Name a prime.", "nan", "Seven is prime.", "Two is the only even prime.", "(a)"),  # the ratings disagree
    ("What is rain?", "nan", "Water falling from clouds.", "A mood.", "(a)"),  # nothing rated: not compared
]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> str:
    """Every example in validation: 2 rated prompts (3 + 2 responses) and 4 A/B rankings."""
    root = tmp_path_factory.mktemp("consistency")
    ratings = write_headerless_csv(root / "ratings.csv", RATINGS)
    rankings = write_headerless_csv(root / "rankings.csv", RANKINGS)
    config = PrepareConfig(
        sources=[
            SourceSpec(format="sparse_feedback_ratings", path=str(ratings)),
            SourceSpec(format="sparse_feedback_rankings", path=str(rankings)),
        ],
        output_dir=str(root / "shards"),
        splits={"train": 0.0, "validation": 1.0, "test": 0.0},
        gaze=GazeSpec(predictor="reading_model", backend="local"),
    )
    prepare(config)
    return config.output_dir


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """A 2-output "ratings" model, a 1-output model, and that model with its value head negated."""
    root = tmp_path_factory.mktemp("models")
    single = save_random_model(root / "single")
    model, tokenizer, config = load_reward_model(single)
    with torch.no_grad():
        model.value_head.weight.neg_()
        model.value_head.bias.neg_()
    negated = save_reward_model(model, tokenizer, config, InputSpec.read(single), root / "negated")
    return {"single": single, "negated": negated, "multi": save_random_model(root / "multi", num_outputs=2)}


def _independent_rewards(model_dir, rows, weights=None) -> list[np.ndarray]:
    """Each row's responses scored on their own, outside score_rows."""
    scorer = RewardScorer(model_dir)
    rewards = [scorer.score([row["prompt"]] * len(row["responses"]), row["responses"]) for row in rows]
    return [r @ np.asarray(weights) if weights is not None else r for r in rewards]


@pytest.fixture(scope="module")
def self_report(dataset_dir, models) -> ConsistencyReport:
    return consistency_report(models["single"], models["single"], dataset_dir)


def test_labels_of_ratings_and_rankings_are_compared_where_both_exist(self_report):
    labels = self_report.label_agreement
    assert (labels.pairs, labels.ties) == (3, 1)
    assert labels.rate == pytest.approx(1 / 3)


def test_a_model_agrees_with_itself(self_report):
    report = self_report
    overall = report.by_source[ALL_SOURCES]
    assert (overall.examples, overall.agreement.pairs, overall.agreement.rate) == (6, 8, 1.0)
    assert overall.ratings_accuracy == overall.rankings_accuracy
    assert overall.ratings_accuracy.pairs == 7  # 2 + 1 rating-derived pairs, 4 A/B rankings
    assert list(report.by_source) == [ALL_SOURCES, "sparse_feedback_rankings", "sparse_feedback_ratings"]
    assert report.by_source["sparse_feedback_ratings"].agreement.pairs == 3 + 1
    assert report.by_source["sparse_feedback_rankings"].ratings_accuracy.pairs == 4


def test_a_negated_model_disagrees_on_every_pair(dataset_dir, models):
    report = consistency_report(models["single"], models["negated"], dataset_dir)
    for group in report.by_source.values():
        assert group.agreement.rate == 0.0 and group.agreement.ties == 0
        assert group.ratings_accuracy.accuracy + group.rankings_accuracy.accuracy == pytest.approx(1.0)
    assert 0.0 < report.by_source[ALL_SOURCES].ratings_accuracy.accuracy < 1.0  # random, not degenerate


def test_numbers_match_independently_scored_rewards(dataset_dir, models):
    weights = (0.25, 0.75)
    report = consistency_report(models["multi"], models["single"], dataset_dir, weights=weights)

    rows = read_split(dataset_dir, "validation")
    ratings = _independent_rewards(models["multi"], rows, weights)
    rankings = _independent_rewards(models["single"], rows)
    same = [
        np.sign(a[i] - a[j]) == np.sign(b[i] - b[j])
        for a, b in zip(ratings, rankings, strict=True)
        for i in range(len(a))
        for j in range(i + 1, len(a))
    ]
    wins = [
        [
            float(r[p["chosen"]] > r[p["rejected"]])
            for row, r in zip(rows, rewards, strict=True)
            for p in row["pairs"]
        ]
        for rewards in (ratings, rankings)
    ]
    overall = report.by_source[ALL_SOURCES]
    assert overall.agreement.pairs == len(same) == 8
    assert overall.agreement.rate == pytest.approx(np.mean(same))
    assert overall.ratings_accuracy.accuracy == pytest.approx(np.mean(wins[0]))
    assert overall.rankings_accuracy.accuracy == pytest.approx(np.mean(wins[1]))
    assert 0.0 < overall.agreement.rate < 1.0  # two unrelated random models: some pairs each way


def test_ties_agree_only_with_ties():
    both_tie = model_agreement([np.array([1.0, 1.0, 0.0])], [np.array([2.0, 2.0, -1.0])])
    assert (both_tie.rate, both_tie.pairs, both_tie.ties) == (1.0, 3, 1)
    one_ties = model_agreement([np.array([1.0, 1.0])], [np.array([1.0, 2.0])])
    assert (one_ties.rate, one_ties.pairs, one_ties.ties) == (0.0, 1, 1)


def test_data_without_rankings_reports_no_label_pairs():
    rows = [
        {
            "source": "helpsteer2",
            "prompt": "Q",
            "responses": ["a", "b"],
            "pairs": [{"chosen": 0, "rejected": 1}],
            "scores": [4.0, 0.0],
            "ranking": None,
        },
    ]
    report = compare("validation", rows, [np.array([1.0, 0.0])], [np.array([0.0, 1.0])])
    assert report.label_agreement.pairs == 0
    assert (
        report.by_source[ALL_SOURCES].ratings_accuracy.accuracy,
        report.by_source["helpsteer2"].agreement.rate,
    ) == (1.0, 0.0)
    assert "0 pairs" in report.table()


def test_consistency_command_prints_the_table_and_writes_json(dataset_dir, models, tmp_path):
    args = ["consistency", dataset_dir, "--ratings-model", str(models["multi"]), "--rankings-model"]
    result = CliRunner().invoke(
        app,
        [
            *args,
            str(models["negated"]),
            "--weights",
            "0.5",
            "--weights",
            "0.5",
            "-o",
            str(tmp_path / "r.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in result.output.splitlines()]
    assert ["sparse_feedback_ratings", "2", "4"] in [row[:3] for row in rows]
    written = json.loads((tmp_path / "r.json").read_text())
    expected = consistency_report(models["multi"], models["negated"], dataset_dir, weights=(0.5, 0.5))
    assert written["by_source"][ALL_SOURCES]["agreement"]["rate"] == pytest.approx(
        expected.by_source[ALL_SOURCES].agreement.rate
    )
    assert written["label_agreement"] == {"rate": pytest.approx(1 / 3), "pairs": 3, "ties": 1}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--split", "test"], "the 'test' split has no rows"),
        (["--weights", "1"], "1 attribute weights for a model with 2 outputs"),
    ],
)
def test_consistency_command_errors(dataset_dir, models, extra, message):
    args = ["consistency", dataset_dir, "--ratings-model", str(models["multi"]), "--rankings-model"]
    result = CliRunner().invoke(app, [*args, str(models["single"]), *extra])
    assert result.exit_code == 2 and message in result.output
