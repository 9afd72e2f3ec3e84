from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from gazerm.cli import app
from gazerm.data.errors import DataError
from gazerm.evaluate.bestofn import rerank_file
from gazerm.score import RewardScorer
from tests.conftest import save_random_model
from tests.test_score import CONTEXT, write_jsonl

ROWS = [
    {
        "id": "bread",
        "prompt": "How do I bake bread at home?",
        "responses": [
            "Mix flour, water, yeast and salt, then knead and bake.",
            "Bread.",
            "Consult an authoritative compendium of artisanal fermentation methodologies.",
        ],
    },
    {"id": "hi", "prompt": "Say hi.", "responses": ["Hi."], "context": CONTEXT},
    {
        "id": "fox",
        "prompt": "Describe a fox.",
        "responses": [
            "A small red dog-like animal.",
            "The quick brown fox jumps.",
            "Foxes are canids.",
            "Red.",
        ],
    },
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_random_model(tmp_path_factory.mktemp("rm") / "model")


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def independent_rewards(scorer: RewardScorer, row: dict) -> np.ndarray:
    """Each candidate scored on its own call: what re-ranking must agree with."""
    n = len(row["responses"])
    return scorer.score([row["prompt"]] * n, row["responses"], [row.get("context")] * n)


def test_rerank_chooses_the_argmax_of_the_rewards(model_dir, tmp_path):
    count = rerank_file(
        model_dir, write_jsonl(tmp_path / "in.jsonl", ROWS), tmp_path / "out" / "chosen.jsonl"
    )
    out = read_jsonl(tmp_path / "out" / "chosen.jsonl")
    assert count == len(out) == len(ROWS)
    scorer = RewardScorer(model_dir)
    for row, written in zip(ROWS, out, strict=True):
        expected = independent_rewards(scorer, row)
        assert {k: v for k, v in written.items() if k not in ("rewards", "chosen_index", "chosen")} == row
        np.testing.assert_allclose(written["rewards"], expected, atol=1e-5, rtol=0)
        assert written["chosen_index"] == int(np.argmax(expected))
        assert written["chosen"] == row["responses"][written["chosen_index"]]
    assert out[1]["chosen_index"] == 0 and len(out[1]["rewards"]) == 1
    assert np.ptp(out[2]["rewards"]) > 1e-3  # the candidates really differ, so the choice means something


def test_parquet_input_gives_the_same_choices(model_dir, tmp_path):
    rows = [{k: v for k, v in row.items() if k != "context"} for row in ROWS]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    rerank_file(model_dir, tmp_path / "in.parquet", tmp_path / "from_parquet.jsonl")
    rerank_file(model_dir, write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "from_jsonl.jsonl")
    from_parquet, from_jsonl = (
        read_jsonl(tmp_path / "from_parquet.jsonl"),
        read_jsonl(tmp_path / "from_jsonl.jsonl"),
    )
    assert [r["chosen_index"] for r in from_parquet] == [r["chosen_index"] for r in from_jsonl]
    np.testing.assert_allclose(
        np.concatenate([r["rewards"] for r in from_parquet]),
        np.concatenate([r["rewards"] for r in from_jsonl]),
        atol=1e-5,
    )


def test_a_tie_goes_to_the_lowest_index(model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(
        "gazerm.evaluate.bestofn.score_rows", lambda scorer, rows, weights: [np.array([1.0, 3.0, 3.0, -2.0])]
    )
    rerank_file(model_dir, write_jsonl(tmp_path / "in.jsonl", ROWS[2:]), tmp_path / "out.jsonl")
    (written,) = read_jsonl(tmp_path / "out.jsonl")
    assert (written["chosen_index"], written["chosen"]) == (1, ROWS[2]["responses"][1])


def test_weights_pick_the_attribute_that_decides(tmp_path):
    model_dir = save_random_model(tmp_path / "model", num_outputs=2)
    inputs = write_jsonl(tmp_path / "in.jsonl", [ROWS[0], ROWS[2]])
    per_attribute = [independent_rewards(RewardScorer(model_dir), row) for row in (ROWS[0], ROWS[2])]
    for attribute, weights in enumerate(([1.0, 0.0], [0.0, 1.0])):
        rerank_file(model_dir, inputs, tmp_path / "out.jsonl", weights=weights)
        out = read_jsonl(tmp_path / "out.jsonl")
        for written, rewards in zip(out, per_attribute, strict=True):
            np.testing.assert_allclose(written["rewards"], rewards[:, attribute], atol=1e-5, rtol=0)
            assert written["chosen_index"] == int(np.argmax(rewards[:, attribute]))
    rerank_file(model_dir, inputs, tmp_path / "mean.jsonl")
    np.testing.assert_allclose(
        read_jsonl(tmp_path / "mean.jsonl")[0]["rewards"], per_attribute[0].mean(1), atol=1e-5
    )
    with pytest.raises(ValueError, match="3 attribute weights for a model with 2 outputs"):
        rerank_file(model_dir, inputs, tmp_path / "bad.jsonl", weights=[1, 1, 1])
    assert not (tmp_path / "bad.jsonl").exists()


def test_weights_for_a_single_output_model_are_refused(model_dir, tmp_path):
    with pytest.raises(ValueError, match="single output"):
        rerank_file(
            model_dir, write_jsonl(tmp_path / "in.jsonl", ROWS), tmp_path / "out.jsonl", weights=[1.0]
        )


@pytest.mark.parametrize(
    ("bad", "field", "message"),
    [
        ({"prompt": "Say hi.", "responses": []}, "responses", "empty list"),
        ({"prompt": "Say hi.", "responses": ["Hi.", "  "]}, "responses[1]", "empty"),
        ({"prompt": "Say hi.", "responses": ["Hi.", 7]}, "responses[1]", "expected str"),
        ({"prompt": "Say hi.", "responses": "Hi."}, "responses", "expected list"),
        ({"prompt": "Say hi."}, "responses", "missing"),
        ({"responses": ["Hi."]}, "prompt", "missing"),
        ({"prompt": "Say hi.", "responses": ["Hi."], "id": [1]}, "id", "expected str or int"),
        (
            {"prompt": "Say hi.", "responses": ["Hi."], "context": [{"role": " ", "content": ""}]},
            "context[0].role",
            "empty",
        ),
        ('{"prompt": "Say hi.", "respo', None, "invalid JSON"),
    ],
)
def test_bad_rows_name_file_row_and_field(model_dir, tmp_path, bad, field, message):
    path = write_jsonl(tmp_path / "in.jsonl", [ROWS[0], bad, ROWS[1]])
    with pytest.raises(DataError, match=message) as caught:
        rerank_file(model_dir, path, tmp_path / "out.jsonl")
    assert (caught.value.file, caught.value.row, caught.value.field) == (path, 2, field)
    assert not (tmp_path / "out.jsonl").exists()


def test_rerank_command(model_dir, tmp_path):
    inputs = write_jsonl(tmp_path / "in.jsonl", ROWS)
    result = CliRunner().invoke(app, ["rerank", str(model_dir), inputs, str(tmp_path / "chosen.jsonl")])
    assert result.exit_code == 0, result.output
    assert f"chose a response for 3 prompts → {tmp_path / 'chosen.jsonl'}" in result.output
    assert [row["id"] for row in read_jsonl(tmp_path / "chosen.jsonl")] == ["bread", "hi", "fox"]

    failed = CliRunner().invoke(
        app, ["rerank", str(model_dir), inputs, str(tmp_path / "x.jsonl"), "--weights", "1"]
    )
    assert failed.exit_code == 2 and "single output" in failed.output
