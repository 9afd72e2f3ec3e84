from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from gazerm.cli import app
from gazerm.data.errors import DataError
from gazerm.features.base import WordGaze, word_spans
from gazerm.features.reading_model import ReadingTimeModel
from gazerm.model.inputs import InputSpec, PromptResponse
from gazerm.model.io import save_reward_model
from gazerm.model.pipeline import InputPipeline
from gazerm.model.reward_model import build_tokenizer
from gazerm.model.templates import render_prompt
from gazerm.score import RewardScorer, score_file
from tests.helpers import READING_MODEL_INPUTS, TEXT_ONLY_INPUTS
from tests.model.conftest import tiny_config
from tests.model.test_io import trained_looking

CONTEXT = [
    {"role": "user", "content": "Hello there."},
    {"role": "assistant", "content": "Hi! How can I help?"},
]
ROWS = [
    {"prompt": "How do I bake bread at home?", "response": "Mix flour, water, yeast and salt, then knead."},
    {"prompt": "Say hi.", "response": "Hi.", "context": CONTEXT},
    {"prompt": "Describe a fox.", "response": "The quick brown fox jumps over the lazy dog. " * 12},
    {"prompt": "What are fixations?", "response": "Eye-tracking measures: fixations and reading time."},
]
MAX_LENGTH = 48  # shorter than the third row, so left truncation is part of what must match


def saved_trained(tmp_path_factory, **overrides):
    """A saved concat-fusion model (every tensor nudged off its init) and the in-memory original."""
    config = tiny_config(**overrides)
    tokenizer = build_tokenizer(config)
    model = trained_looking(config, tokenizer)
    directory = save_reward_model(
        model, tokenizer, config, READING_MODEL_INPUTS, tmp_path_factory.mktemp("rm") / "model"
    )
    return directory, model, tokenizer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return saved_trained(tmp_path_factory)


@pytest.fixture(scope="module")
def reference_trained(tmp_path_factory):
    """The same with the reference gaze layout, which reads the prompt's gaze too."""
    return saved_trained(tmp_path_factory, gaze_layout="reference")


@pytest.fixture(scope="module")
def scorer(trained) -> RewardScorer:
    return RewardScorer(trained[0], max_length=MAX_LENGTH)


def write_jsonl(path, lines: list) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


def training_rewards(model, tokenizer, recorded: dict[int, WordGaze] | None = None) -> np.ndarray:
    """What the model gives ``ROWS`` built as training builds them: predicted gaze for each response (or
    the ``recorded`` one) and, for the reference layout, each prompt (none beside a recorded response)."""
    recorded = recorded or {}
    spec = InputSpec({"predictor": "reading_model"}, MAX_LENGTH)  # the scorer reads at MAX_LENGTH
    encoder = InputPipeline.from_spec(spec, tokenizer, model.model_config).encoder
    predictor = ReadingTimeModel()
    sequences = []
    for index, (row, prompt_gaze) in enumerate(
        zip(ROWS, predictor.predict([r["prompt"] for r in ROWS]), strict=True)
    ):
        response_gaze = recorded.get(index) or predictor.predict([row["response"]])[0]
        words = (None, None) if index in recorded else (np.asarray(prompt_gaze.spans), prompt_gaze.features)
        prefix, prompt = encoder.prefix(row.get("context"), row["prompt"], *words)
        assert prefix == render_prompt(row.get("context"), row["prompt"])
        assert (prompt is not None) == (model.model_config.gazes_prompt and index not in recorded)
        gaze = (np.asarray(response_gaze.spans), response_gaze.features)
        sequences.append(PromptResponse(prefix, row["response"], *gaze, prompt=prompt))
    batch = encoder.pad(encoder.encode(sequences))
    assert batch.input_ids.shape[1] == MAX_LENGTH and batch.gaze_mask.any()
    with torch.no_grad():
        return model(batch.input_ids, batch.attention_mask, batch.gaze, batch.gaze_mask).rewards.numpy()


@pytest.mark.parametrize("layout", ["trained", "reference_trained"])
def test_scorer_matches_the_model_on_training_inputs(request, layout):
    directory, model, tokenizer = request.getfixturevalue(layout)
    scorer = RewardScorer(directory, max_length=MAX_LENGTH)
    texts = [row["response"] for row in ROWS]
    args = ([r["prompt"] for r in ROWS], texts, [r.get("context") for r in ROWS])
    rewards = scorer.score(*args)
    assert rewards.shape == (len(ROWS),) and rewards.dtype == np.float32
    np.testing.assert_allclose(rewards, training_rewards(model, tokenizer), rtol=1e-5, atol=1e-6)
    assert np.ptp(rewards) > 1e-3  # the texts really get different rewards
    if layout == "reference_trained":  # the prompt's gaze counts
        scorer.encoder.prompt_gaze = False
        without = scorer.score(*args)
        assert np.abs(np.delete(without - rewards, 2)).min() > 1e-5  # row 2's prompt is truncated away
        # A recorded response's prompt has no gaze: a recording covers the response only.
        recorded = WordGaze(word_spans(texts[1]), np.full((len(word_spans(texts[1])), 5), 0.9, np.float32))
        scorer.encoder.prompt_gaze = True
        mixed = scorer.score(*args, gaze=[None, recorded, None, None])
        np.testing.assert_allclose(
            mixed, training_rewards(model, tokenizer, {1: recorded}), rtol=1e-5, atol=1e-6
        )


def test_rewards_do_not_depend_on_the_batch_size(scorer, monkeypatch):
    args = ([r["prompt"] for r in ROWS], [r["response"] for r in ROWS], [r.get("context") for r in ROWS])
    many = scorer.score(*args)
    monkeypatch.setattr(scorer, "batch_size", 1)
    np.testing.assert_allclose(scorer.score(*args), many, atol=1e-5, rtol=0)


def test_context_changes_the_reward(scorer):
    with_context, without = scorer.score(["Say hi."] * 2, ["Hi."] * 2, [CONTEXT, None])
    assert with_context != pytest.approx(without, abs=1e-6)


def test_score_file_writes_each_row_with_its_reward(trained, tmp_path):
    directory, _, _ = trained
    jsonl = write_jsonl(tmp_path / "in.jsonl", [{**row, "id": i} for i, row in enumerate(ROWS)])
    count = score_file(directory, jsonl, tmp_path / "out" / "scored.jsonl")
    out = [json.loads(line) for line in (tmp_path / "out" / "scored.jsonl").read_text().splitlines()]
    assert count == len(out) == len(ROWS)
    assert [{k: v for k, v in row.items() if k != "reward"} for row in out] == [
        {**row, "id": i} for i, row in enumerate(ROWS)
    ]
    assert all(isinstance(row["reward"], float) for row in out)

    parquet = tmp_path / "in.parquet"
    pq.write_table(
        pa.Table.from_pylist([{"prompt": r["prompt"], "response": r["response"]} for r in ROWS]), parquet
    )
    score_file(directory, parquet, tmp_path / "from_parquet.jsonl")
    from_parquet = [
        json.loads(line)["reward"] for line in (tmp_path / "from_parquet.jsonl").read_text().splitlines()
    ]
    without_context = [r["reward"] for r in out]
    assert from_parquet[0] == pytest.approx(without_context[0], abs=1e-5)
    assert from_parquet[2:] == pytest.approx(without_context[2:], abs=1e-5)


def test_score_command(trained, tmp_path):
    jsonl = write_jsonl(tmp_path / "in.jsonl", ROWS[:2])
    result = CliRunner().invoke(app, ["score", str(trained[0]), jsonl, "--output", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 0, result.output
    assert "scored 2 rows" in result.output and str(tmp_path / "o.jsonl") in result.output
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize(
    ("bad", "field", "message"),
    [
        ({"prompt": "Say hi."}, "response", "missing"),
        ({"prompt": "Say hi.", "response": "   "}, "response", "empty"),
        ({"prompt": 3, "response": "Hi."}, "prompt", "expected str"),
        ({"prompt": "Say hi.", "response": "Hi.", "context": "Hello"}, "context", "expected list"),
        (
            {"prompt": "Say hi.", "response": "Hi.", "context": [{"content": "x"}]},
            "context[0].role",
            "missing",
        ),
        ('{"prompt": "Say hi.", "response": "H', None, "invalid JSON"),
    ],
)
def test_bad_rows_name_file_row_and_field(trained, tmp_path, bad, field, message):
    path = write_jsonl(tmp_path / "in.jsonl", [ROWS[0], bad])
    with pytest.raises(DataError, match=message) as caught:
        score_file(trained[0], path, tmp_path / "out.jsonl")
    assert (caught.value.file, caught.value.row, caught.value.field) == (path, 2, field)
    assert not (tmp_path / "out.jsonl").exists()


def test_gaze_fusion_without_a_gaze_predictor_is_refused(tmp_path):
    config = tiny_config()
    tokenizer = build_tokenizer(config)
    save_reward_model(trained_looking(config, tokenizer), tokenizer, config, TEXT_ONLY_INPUTS, tmp_path)
    with pytest.raises(ValueError, match="names no gaze predictor"):
        RewardScorer(tmp_path)  # its inputs.json names no gaze predictor


def test_text_only_model_scores_without_gaze_spec(tmp_path):
    config = tiny_config(fusion="none", num_outputs=2)
    tokenizer = build_tokenizer(config)
    save_reward_model(trained_looking(config, tokenizer), tokenizer, config, TEXT_ONLY_INPUTS, tmp_path)
    rewards = RewardScorer(tmp_path).score(["Say hi.", "Why?"], ["Hi.", "Because."])
    assert rewards.shape == (2, 2) and np.isfinite(rewards).all()


def test_recorded_gaze_replaces_the_prediction_of_its_response_only(scorer, monkeypatch):
    prompts, texts = [r["prompt"] for r in ROWS], [r["response"] for r in ROWS]
    recorded = WordGaze(word_spans(texts[1]), np.full((len(word_spans(texts[1])), 5), 0.9, np.float32))
    predicted = scorer.score(prompts, texts)
    np.testing.assert_array_equal(scorer.score(prompts, texts, gaze=[None] * len(ROWS)), predicted)

    mixed = scorer.score(prompts, texts, gaze=[None, recorded, None, None])
    assert mixed[1] != pytest.approx(predicted[1], abs=1e-4)
    np.testing.assert_allclose(np.delete(mixed, 1), np.delete(predicted, 1), atol=1e-5, rtol=0)
    # Exactly what the model gives when its predictor had predicted the recorded gaze.
    own = ReadingTimeModel().predict(texts)
    monkeypatch.setattr(
        scorer.predictor,
        "predict",
        lambda batch: [recorded if t == texts[1] else own[texts.index(t)] for t in batch],
    )
    np.testing.assert_allclose(scorer.score(prompts, texts), mixed, atol=1e-6, rtol=0)


def test_recorded_gaze_for_a_model_without_gaze_is_refused(tmp_path):
    config = tiny_config(fusion="none")
    tokenizer = build_tokenizer(config)
    save_reward_model(trained_looking(config, tokenizer), tokenizer, config, TEXT_ONLY_INPUTS, tmp_path)
    gaze = WordGaze([(0, 3)], np.zeros((1, 5), np.float32))
    with pytest.raises(ValueError, match="does not use gaze"):
        RewardScorer(tmp_path).score(["Say hi."], ["Hi."], gaze=[gaze])


def test_a_model_trained_on_recorded_gaze_scores_only_with_recorded_gaze(tmp_path):
    """It has no predictor to fall back on: a response without its recorded gaze is refused, never scored
    as if nobody had read it."""
    config = tiny_config()
    tokenizer = build_tokenizer(config)
    inputs = InputSpec({"predictor": "recorded", "path": "fixations.parquet"}, MAX_LENGTH)
    save_reward_model(trained_looking(config, tokenizer), tokenizer, config, inputs, tmp_path)
    scorer = RewardScorer(tmp_path)
    texts = ["Hi there.", "Hello, how are you?"]
    gaze = [WordGaze(word_spans(t), np.full((len(word_spans(t)), 5), 0.5, np.float32)) for t in texts]
    rewards = scorer.score(["Say hi."] * 2, texts, gaze=gaze)
    assert rewards.shape == (2,) and np.isfinite(rewards).all()
    with pytest.raises(ValueError, match=r"recorded gaze, which 1 response"):
        scorer.score(["Say hi."] * 2, texts, gaze=[gaze[0], None])


def test_score_file_that_fails_midway_leaves_the_earlier_output_whole(trained, tmp_path, monkeypatch):
    """The output is written beside and renamed in: a reader never sees part of the rows."""
    import gazerm.score

    directory, _, _ = trained
    jsonl = write_jsonl(tmp_path / "in.jsonl", ROWS)
    output = tmp_path / "scored.jsonl"
    output.write_text('{"earlier": true}\n')
    dumps, calls = json.dumps, []

    def failing_dumps(value, **kwargs):
        calls.append(value)
        if len(calls) == 2:
            raise OSError("disk full")
        return dumps(value, **kwargs)

    monkeypatch.setattr(gazerm.score.json, "dumps", failing_dumps)
    with pytest.raises(OSError, match="disk full"):
        score_file(directory, jsonl, output)
    assert output.read_text() == '{"earlier": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "scored.jsonl"]
