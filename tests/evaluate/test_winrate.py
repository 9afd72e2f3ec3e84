from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from gazerm.cli import app
from gazerm.data.errors import DataError
from gazerm.evaluate.bestofn import rerank_file
from gazerm.evaluate.winrate import wilson_interval, win_rate
from tests.conftest import save_random_model
from tests.evaluate.test_bestofn import ROWS, read_jsonl
from tests.test_score import CONTEXT, write_jsonl

RESPONSES = ["Alpha.", "Beta.", "Gamma."]
PROMPTS = ["One?", "Two?", "Three?", "Four?", "Five?"]
SCORES = [[3, 2, 1], [1, 2, 3], [5, 5, 0], [0, 1, 2], [2, 0, 1]]  # higher is better
RANKINGS = [[0, 1, 2], [2, 1, 0], [0, 1, 2], [2, 1, 0], [0, 2, 1]]  # best first; no tie on row 3
CHOICE_A = [0, 2, 1, 0, 2]  # vs B: win, win, tie (equal scores), loss, win
CHOICE_B = [1, 0, 0, 1, 1]


def choices(indices: list[int], **extra) -> list[dict]:
    return [{"prompt": p, "chosen": RESPONSES[i], **extra} for p, i in zip(PROMPTS, indices, strict=True)]


def reference(labels: str = "scores") -> list[dict]:
    values = SCORES if labels == "scores" else RANKINGS
    return [{"prompt": p, "responses": RESPONSES, labels: v} for p, v in zip(PROMPTS, values, strict=True)]


@pytest.fixture
def files(tmp_path) -> dict[str, str]:
    return {
        "a": write_jsonl(tmp_path / "a.jsonl", choices(CHOICE_A)),
        "b": write_jsonl(tmp_path / "b.jsonl", choices(CHOICE_B)),
        "scores": write_jsonl(tmp_path / "scores.jsonl", reference("scores")),
        "ranking": write_jsonl(tmp_path / "ranking.jsonl", reference("ranking")),
    }


@pytest.mark.parametrize(
    ("labels", "counts", "rate"), [("scores", (3, 1, 1), 0.7), ("ranking", (3, 0, 2), 0.6)]
)
def test_reference_preferences_give_the_counted_win_rate(files, labels, counts, rate):
    result = win_rate(files["a"], files["b"], reference=files[labels])
    assert (result.n, result.wins, result.ties, result.losses) == (5, *counts)
    assert result.win_rate == pytest.approx(rate)
    assert (result.ci_low, result.ci_high) == pytest.approx(wilson_interval(rate, 5))
    assert result.judged_by == f"reference {files[labels]}"

    reverse = win_rate(files["b"], files["a"], reference=files[labels])
    assert (reverse.wins, reverse.ties, reverse.losses) == counts[::-1]
    assert reverse.win_rate == pytest.approx(1 - result.win_rate)


def test_rows_are_matched_by_prompt_and_context_not_by_order(files, tmp_path):
    shuffled = write_jsonl(tmp_path / "b_shuffled.jsonl", choices(CHOICE_B)[::-1])
    assert win_rate(files["a"], shuffled, reference=files["scores"]).wins == 3

    # the same prompt with another context is another prompt: B's rows then match nothing of A's
    in_context = write_jsonl(tmp_path / "b_context.jsonl", choices(CHOICE_B, context=CONTEXT))
    with pytest.raises(DataError, match="no row for prompt 'One\\?'") as caught:
        win_rate(files["a"], in_context, reference=files["scores"])
    assert caught.value.file == in_context


def test_rows_are_matched_by_id_when_every_row_has_one(tmp_path):
    # two rows share a prompt, so only ids tell them apart
    a = [{"id": 1, "prompt": "Same?", "chosen": "Alpha."}, {"id": 2, "prompt": "Same?", "chosen": "Beta."}]
    b = [{"id": 2, "prompt": "Same?", "chosen": "Alpha."}, {"id": 1, "prompt": "Same?", "chosen": "Gamma."}]
    ref = [
        {"id": 1, "prompt": "Same?", "responses": RESPONSES, "scores": [3, 2, 1]},
        {"id": 2, "prompt": "Same?", "responses": RESPONSES, "scores": [1, 2, 3]},
    ]
    paths = [write_jsonl(tmp_path / f"{name}.jsonl", rows) for name, rows in (("a", a), ("b", b), ("r", ref))]
    result = win_rate(paths[0], paths[1], reference=paths[2])
    assert (result.wins, result.ties, result.losses) == (2, 0, 0)

    without_ids = write_jsonl(
        tmp_path / "b_no_id.jsonl", [{k: v for k, v in r.items() if k != "id"} for r in b]
    )
    with pytest.raises(DataError, match="prompt 'Same\\?' repeats row 1") as caught:
        win_rate(paths[0], without_ids, reference=paths[2])
    assert (caught.value.file, caught.value.row, caught.value.field) == (paths[0], 2, "prompt")


def test_a_prompt_missing_from_either_file_is_named(files, tmp_path):
    fewer = write_jsonl(tmp_path / "fewer.jsonl", choices(CHOICE_B)[:4])
    missing = re.escape(f"no row for prompt 'Five?' (row 5 of {files['a']})")
    with pytest.raises(DataError, match=missing) as caught:
        win_rate(files["a"], fewer, reference=files["scores"])
    assert caught.value.file == fewer
    with pytest.raises(DataError, match=missing) as caught:
        win_rate(fewer, files["a"], reference=files["scores"])
    assert caught.value.file == fewer

    partial_reference = write_jsonl(tmp_path / "partial.jsonl", reference()[1:])
    with pytest.raises(DataError, match="no row for prompt 'One\\?'") as caught:
        win_rate(files["a"], files["b"], reference=partial_reference)
    assert caught.value.file == partial_reference


def test_a_chosen_text_the_reference_does_not_know_is_an_error(files, tmp_path):
    unknown = choices(CHOICE_B)
    unknown[3]["chosen"] = "Delta."
    path = write_jsonl(tmp_path / "unknown.jsonl", unknown)
    unknown_text = re.escape(f"not among the responses of {files['scores']} row 4")
    with pytest.raises(DataError, match=unknown_text) as caught:
        win_rate(files["a"], path, reference=files["scores"])
    assert (caught.value.file, caught.value.row, caught.value.field) == (path, 4, "chosen")

    partial = reference("ranking")
    partial[0]["ranking"] = [2, 0]  # Beta. (A's choice on row 1 is Alpha., B's Beta.) is left unranked
    ranking = write_jsonl(tmp_path / "partial_ranking.jsonl", partial)
    with pytest.raises(DataError, match=r"response 1 of .* which its ranking leaves out") as caught:
        win_rate(files["a"], files["b"], reference=ranking)
    assert (caught.value.file, caught.value.row, caught.value.field) == (files["b"], 1, "chosen")


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"scores": [1, 2]}, "scores", "2 scores for 3 responses"),
        ({"scores": [1, "x", 2]}, "scores[1]", "expected a number"),
        ({"ranking": [0, 1]}, "scores", "exactly one"),
        ({"scores": None, "ranking": [0, 3]}, "ranking[1]", "index 3 out of range"),
        ({"scores": None, "ranking": [1, 1]}, "ranking[1]", "ranked twice"),
        ({"responses": ["Alpha.", ""]}, "responses[1]", "empty"),
    ],
)
def test_bad_reference_rows_name_file_row_and_field(files, tmp_path, change, field, message):
    rows = reference()
    rows[2] = {**rows[2], **change}
    path = write_jsonl(tmp_path / "bad_reference.jsonl", rows)
    with pytest.raises(DataError, match=message) as caught:
        win_rate(files["a"], files["b"], reference=path)
    assert (caught.value.file, caught.value.row, caught.value.field) == (path, 3, field)


@pytest.mark.parametrize(
    ("bad", "field", "message"),
    [({"prompt": "Six?"}, "chosen", "missing"), ({"prompt": " ", "chosen": "Alpha."}, "prompt", "empty")],
)
def test_bad_choice_rows_name_file_row_and_field(files, tmp_path, bad, field, message):
    path = write_jsonl(tmp_path / "bad_choices.jsonl", [*choices(CHOICE_B), bad])
    with pytest.raises(DataError, match=message) as caught:
        win_rate(files["a"], path, reference=files["scores"])
    assert (caught.value.file, caught.value.row, caught.value.field) == (path, 6, field)


def test_exactly_one_judge(files):
    with pytest.raises(ValueError, match="either a reference"):
        win_rate(files["a"], files["b"])
    with pytest.raises(ValueError, match="either a reference"):
        win_rate(files["a"], files["b"], reference=files["scores"], judge="model")


def test_wilson_interval_known_values():
    assert wilson_interval(0.5, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert wilson_interval(1.0, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(0.0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_interval_contains_the_rate_and_shrinks_with_n(rate):
    widths = []
    for n in (10, 100, 1000):
        low, high = wilson_interval(rate, n)
        assert 0 <= low <= rate <= high <= 1
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2] > 0


@pytest.fixture(scope="module")
def reranked(tmp_path_factory):
    """A model, its best-of-n choices (A) and the worst candidate per prompt (B), from its own rewards."""
    root = tmp_path_factory.mktemp("judge")
    model_dir = save_random_model(root / "model")
    rerank_file(model_dir, write_jsonl(root / "in.jsonl", ROWS), root / "best.jsonl")
    worst = [
        {**row, "chosen": row["responses"][int(np.argmin(row["rewards"]))]}
        for row in read_jsonl(root / "best.jsonl")
    ]
    return model_dir, str(root / "best.jsonl"), write_jsonl(root / "worst.jsonl", worst)


def test_judge_prefers_its_own_best_of_n(reranked):
    model_dir, best, worst = reranked
    result = win_rate(best, worst, judge=model_dir)
    # ROWS: two prompts with several distinct candidates (best beats worst), one with a single candidate (tie)
    assert (result.n, result.wins, result.ties, result.losses) == (3, 2, 1, 0)
    assert result.win_rate == pytest.approx(2.5 / 3)
    assert result.judged_by == f"judge {model_dir}"


def test_choices_against_themselves_are_all_ties(reranked):
    model_dir, best, _ = reranked
    result = win_rate(best, best, judge=model_dir)
    assert (result.n, result.ties, result.win_rate) == (3, 3, 0.5)
    assert result.ci_low < 0.5 < result.ci_high


def test_winrate_command_prints_and_writes_the_result(files, tmp_path):
    output = tmp_path / "report" / "winrate.json"
    args = ["winrate", files["a"], files["b"], "--reference", files["scores"], "--output", str(output)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| 5 | 3    | 1    | 1      | 0.7000" in result.output and "Wilson" in result.output
    written = json.loads(output.read_text())
    low, high = wilson_interval(0.7, 5)
    assert written == {
        "choices_a": files["a"],
        "choices_b": files["b"],
        "judged_by": f"reference {files['scores']}",
        "n": 5,
        "wins": 3,
        "ties": 1,
        "losses": 1,
        "win_rate": pytest.approx(0.7),
        "ci_low": pytest.approx(low),
        "ci_high": pytest.approx(high),
        "interval": "Wilson score interval, ties counted half",
    }

    failed = CliRunner().invoke(app, ["winrate", files["a"], files["b"]])
    assert failed.exit_code == 2 and "either a reference" in failed.output
