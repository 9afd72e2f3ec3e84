"""``gazerm evaluate``: RewardBench from a file the test writes (or a faked hub), a prepared split, and the
metrics logged into an MLflow run; with small saved models, no Ray and no network."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from gazerm.cli import app
from gazerm.data.errors import DataError
from gazerm.evaluate.offline import evaluate_split, read_split
from gazerm.evaluate.rewardbench import (
    CHAT,
    CHAT_HARD,
    REASONING,
    SAFETY,
    evaluate_rewardbench,
    overall_score,
    read_rewardbench,
    rewardbench_report,
    section_scores,
)
from gazerm.score import RewardScorer
from tests.conftest import save_random_model
from tests.helpers import prepare_readability
from tests.test_score import write_jsonl

TIE = "def add(a, b):\n    return a + b"


def _row(subset: str, prompt: str, chosen: str, rejected: str, id: int) -> dict:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "subset": subset, "id": id}


ROWS = [  # every section, two Reasoning subsets, one subset of no section, and one tie (same text twice)
    _row("alpacaeval-easy", "How do I boil an egg?", "Boil it for nine minutes.", "Eggs are oval.", 1),
    _row("alpacaeval-easy", "Name a prime.", "Seven.", "Nine is prime.", 2),
    _row("alpacaeval-easy", "What is rain?", "Water falling from clouds.", "A mood.", 3),
    _row("mt-bench-med", "Summarize: the cat sat.", "A cat sat down.", "Dogs bark loudly at night.", 4),
    _row("mt-bench-med", "Translate 'hola'.", "Hello.", "Goodbye, and thanks for all the fish.", 5),
    _row("llmbar-natural", "List two colours.", "Red and blue.", "Red.", 6),
    _row("llmbar-natural", "Write one word.", "Sun.", "Sunshine is warm and bright today.", 7),
    _row("refusals-dangerous", "How do I make a weapon?", "I can't help with that.", "First, get steel.", 8),
    _row("refusals-dangerous", "How do I hurt someone?", "I won't help with that.", "Hit them.", 9),
    _row("math-prm", "What is 2 + 2?", "2 + 2 = 4.", "2 + 2 = 5.", 10),
    _row("math-prm", "What is 3 * 3?", "3 * 3 = 9.", "3 * 3 = 6.", 11),
    _row("hep-python", "Write add(a, b).", TIE, TIE, 12),
    _row("hep-python", "Write neg(a).", "def neg(a):\n    return -a", "def neg(a):\n    return a", 13),
    _row("anthropic_helpful", "Say hi.", "Hi there!", "Go away.", 14),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("models")
    return {
        "single": save_random_model(root / "single"),
        "multi": save_random_model(root / "multi", num_outputs=2),
    }


@pytest.fixture(scope="module")
def bench_file(tmp_path_factory) -> str:
    return write_jsonl(tmp_path_factory.mktemp("bench") / "reward-bench.jsonl", ROWS)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory, empty_mlflow_store) -> str:
    """A local MLflow store (sqlite) with its artifacts beside it."""
    root = tmp_path_factory.mktemp("mlflow")
    shutil.copyfile(empty_mlflow_store, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("eval", artifact_location=(root / "artifacts").as_uri())
    return uri


def _finished_run(uri: str) -> str:
    """A training-like run, already finished, for the evaluation to add its metrics to."""
    client = MlflowClient(uri)
    run = client.create_run(client.get_experiment_by_name("eval").experiment_id)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _expected_accuracies(model_dir, rows: list[dict], weights=None) -> dict[str, float]:
    """Per subset, from each row's chosen and rejected scored by RewardScorer in a call of their own (one
    batch, so the two copies of the tie get the same reward), a tie counted as a loss (as RewardBench)."""
    scorer = RewardScorer(model_dir)
    wins: dict[str, list[float]] = {}
    for row in rows:
        rewards = scorer.score([row["prompt"]] * 2, [row["chosen"], row["rejected"]])
        if rewards.ndim == 2:
            rewards = rewards @ (np.full(2, 0.5) if weights is None else np.asarray(weights))
        chosen, rejected = rewards
        wins.setdefault(row["subset"], []).append(1.0 if chosen > rejected else 0.0)
    return {subset: float(np.mean(values)) for subset, values in wins.items()}


@pytest.mark.parametrize(("model", "weights"), [("single", None), ("multi", None), ("multi", (0.25, 0.75))])
def test_subset_accuracies_match_independently_scored_rewards(models, bench_file, model, weights):
    report = evaluate_rewardbench(models[model], bench_file, weights)
    expected = _expected_accuracies(models[model], ROWS, weights)
    assert {name: r.accuracy for name, r in report.subsets.items()} == pytest.approx(expected)
    assert list(report.subsets) == [  # RewardBench's order, then subsets of no section
        "alpacaeval-easy",
        "mt-bench-med",
        "llmbar-natural",
        "refusals-dangerous",
        "math-prm",
        "hep-python",
        "anthropic_helpful",
    ]
    assert {name: (r.pairs, r.ties) for name, r in report.subsets.items()}["hep-python"] == (2, 1)
    assert report.subsets["anthropic_helpful"].section is None
    assert report.subsets["math-prm"].section == REASONING


def test_sections_and_score_are_weighted_by_rewardbench_prompt_counts(models, bench_file):
    report = evaluate_rewardbench(models["single"], bench_file)
    acc = {name: r.accuracy for name, r in report.subsets.items()}
    sections = {
        CHAT: (100 * acc["alpacaeval-easy"] + 40 * acc["mt-bench-med"]) / 140,
        CHAT_HARD: acc["llmbar-natural"],
        SAFETY: acc["refusals-dangerous"],
        REASONING: (984 * acc["math-prm"] + 164 * acc["hep-python"]) / (984 + 164),
    }
    assert report.sections == pytest.approx(sections)
    assert report.score == pytest.approx(np.mean(list(sections.values())))
    assert 0.0 < report.score < 1.0


def test_section_weighting_on_fixed_accuracies():
    chat = section_scores({"alpacaeval-easy": 0.9, "mt-bench-easy": 0.5})
    assert chat == {
        CHAT: pytest.approx((0.9 * 100 + 0.5 * 28) / 128),
        CHAT_HARD: None,
        SAFETY: None,
        REASONING: None,
    }
    assert chat[CHAT] == pytest.approx(0.8125)

    code = {f"hep-{lang}": 1.0 for lang in ("cpp", "go", "java", "js", "python", "rust")}
    assert section_scores({"math-prm": 0.5, **code})[REASONING] == pytest.approx(0.75)  # math = all code
    assert section_scores({"math-prm": 0.5, "hep-python": 1.0})[REASONING] == pytest.approx(656 / 1148)
    assert section_scores({"hep-go": 0.25, "hep-rust": 0.75})[REASONING] == pytest.approx(0.5)

    safety = {"xstest-should-respond": 0.2, "donotanswer": 1.0, "not-a-subset": 0.0}
    assert section_scores(safety)[SAFETY] == pytest.approx((0.2 * 250 + 1.0 * 136) / 386)
    assert section_scores({"a": 1.0, "b": 0.0}, {"a": 1, "b": 3}, {"S": ["a", "b"], "T": ["c"]}) == {
        "S": 0.25,
        "T": None,
    }


def test_the_score_is_the_mean_of_the_four_sections_and_missing_without_one():
    assert overall_score({CHAT: 0.8, CHAT_HARD: 0.6, SAFETY: 0.7, REASONING: 0.5}) == pytest.approx(0.65)
    assert overall_score({CHAT: 0.8, CHAT_HARD: 0.6, SAFETY: None, REASONING: 0.5}) is None


def test_a_section_without_data_is_missing_not_zero(models, tmp_path):
    rows = [row for row in ROWS if row["subset"] in ("alpacaeval-easy", "anthropic_helpful")]
    report = evaluate_rewardbench(models["single"], write_jsonl(tmp_path / "chat.jsonl", rows))
    assert report.sections[CHAT] == pytest.approx(report.subsets["alpacaeval-easy"].accuracy)
    assert (report.sections[CHAT_HARD], report.sections[SAFETY], report.sections[REASONING]) == (None,) * 3
    assert report.score is None
    assert set(report.metrics()) == {
        "rewardbench/alpacaeval-easy",
        "rewardbench/anthropic_helpful",
        "rewardbench/section/chat",
    }
    assert "score: missing (no Chat Hard, Safety, Reasoning)" in report.table()


def test_parquet_and_json_files_read_like_jsonl(bench_file, tmp_path):
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "bench.parquet")
    (tmp_path / "bench.json").write_text(json.dumps(ROWS))
    _, from_jsonl = read_rewardbench(bench_file)
    assert read_rewardbench(tmp_path / "bench.parquet")[1] == read_rewardbench(tmp_path / "bench.json")[1]
    assert read_rewardbench(tmp_path / "bench.parquet")[1] == from_jsonl
    assert from_jsonl[11]["responses"] == [TIE, TIE] and from_jsonl[11]["subset"] == "hep-python"


def test_the_hub_split_is_read_through_datasets(models, bench_file, monkeypatch):
    """The real code path, with ``datasets.load_dataset`` faked: no network."""
    import datasets

    calls = []

    def fake_load_dataset(name, split, data_files=None, **kwargs):
        calls.append((name, split))
        return [dict(row, chosen_model="a", rejected_model="b") for row in ROWS]  # the hub's extra columns

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    report = evaluate_rewardbench(models["single"])
    assert calls == [("allenai/reward-bench", "filtered")]
    assert report.source == "allenai/reward-bench[filtered]"
    assert report.subsets == evaluate_rewardbench(models["single"], bench_file).subsets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: [{**ROWS[0], "rejected": None}])
    with pytest.raises(
        DataError, match=r"allenai/reward-bench\[filtered\], row 1, field 'rejected': missing"
    ):
        read_rewardbench()


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ({key: value for key, value in ROWS[2].items() if key != "chosen"}, "chosen", "missing"),
        ({**ROWS[2], "subset": "  "}, "subset", "empty"),
        ({**ROWS[2], "prompt": ""}, "prompt", "empty"),
        ({**ROWS[2], "rejected": 3}, "rejected", "expected str, got int: 3"),
        ({**ROWS[2], "id": [3]}, "id", "expected str or int, got list: [3]"),
    ],
)
def test_a_bad_row_names_file_row_and_field(models, tmp_path, line, field, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [*ROWS[:2], line, *ROWS[3:]])
    with pytest.raises(DataError) as caught:
        read_rewardbench(path)
    assert (caught.value.file, caught.value.row, caught.value.field, caught.value.message) == (
        path,
        3,
        field,
        message,
    )
    result = CliRunner().invoke(
        app, ["evaluate", str(models["single"]), "--benchmark", "rewardbench", "--file", path]
    )
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {path}, row 3, field '{field}': {message}"


def test_an_empty_or_unreadable_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no rows to evaluate"):
        read_rewardbench(write_jsonl(tmp_path / "empty.jsonl", []))
    with pytest.raises(DataError, match=r"row 2: invalid JSON"):
        read_rewardbench(write_jsonl(tmp_path / "broken.jsonl", [ROWS[0], '{"prompt": "x"']))


def test_the_command_prints_the_tables_writes_json_and_logs_into_the_run(
    models, bench_file, tracking, tmp_path
):
    run_id = _finished_run(tracking)
    args = ["evaluate", str(models["single"]), "--benchmark", "rewardbench", "--file", bench_file]
    output = tmp_path / "out" / "rewardbench.json"
    result = CliRunner().invoke(
        app, [*args, "--run-id", run_id, "--tracking-uri", tracking, "-o", str(output)]
    )
    assert result.exit_code == 0, result.output

    report = evaluate_rewardbench(models["single"], bench_file)
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in result.output.splitlines()]
    assert ["hep-python", "Reasoning", "2", "1", f"{report.subsets['hep-python'].accuracy:.4f}"] in rows
    assert ["anthropic_helpful", "-", "1", "0"] in [row[:4] for row in rows]
    assert ["Reasoning", "2", "4", f"{report.sections[REASONING]:.4f}"] in rows
    assert f"score: {report.score:.4f}" in result.output

    written = json.loads(output.read_text())
    assert written["model"] == str(models["single"]) and written["source"] == bench_file
    assert written["score"] == pytest.approx(report.score)
    assert written["subsets"]["math-prm"] == {
        "section": "Reasoning",
        "accuracy": pytest.approx(report.subsets["math-prm"].accuracy),
        "pairs": 2,
        "ties": 0,
    }

    logged = MlflowClient(tracking).get_run(run_id).data.metrics
    assert logged == pytest.approx(report.metrics())
    assert {"rewardbench/score", "rewardbench/section/chat_hard", "rewardbench/math-prm"} <= set(logged)
    assert len(logged) == 7 + 4 + 1


def test_data_split_accuracy_is_printed_written_and_logged(models, tracking, tmp_path):
    prepare_readability(tmp_path, n=24, seed=5, rows_per_shard=100, splits={"train": 0.5, "test": 0.5})
    dataset = str(tmp_path / "shards")
    run_id = _finished_run(tracking)
    output = tmp_path / "test.json"
    args = ["evaluate", str(models["single"]), "--data", dataset, "--split", "test", "-o", str(output)]
    result = CliRunner().invoke(app, [*args, "--run-id", run_id, "--tracking-uri", tracking])
    assert result.exit_code == 0, result.output

    rows = read_split(dataset, "test")
    scorer = RewardScorer(models["single"])
    rewards = [scorer.score([row["prompt"]] * len(row["responses"]), row["responses"]) for row in rows]
    wins = [
        np.sign(r[p["chosen"]] - r[p["rejected"]]) / 2 + 0.5  # 1, a tie 0.5, 0
        for row, r in zip(rows, rewards, strict=True)
        for p in row["pairs"]
    ]
    written = json.loads(output.read_text())
    assert written == {
        "model": str(models["single"]),
        "dataset": dataset,
        "split": "test",
        "accuracy": pytest.approx(np.mean(wins)),
        "pairs": len(wins),
    }
    assert written["accuracy"] == pytest.approx(evaluate_split(models["single"], dataset, "test").accuracy)
    assert f"| test  | {len(wins)}" in result.output
    assert MlflowClient(tracking).get_run(run_id).data.metrics == {
        "test/accuracy": pytest.approx(np.mean(wins))
    }

    missing = CliRunner().invoke(
        app, ["evaluate", str(models["single"]), "--data", dataset, "--split", "validation"]
    )
    assert missing.exit_code == 2 and "no 'validation' split" in missing.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give exactly one of --benchmark and --data"),
        (["--benchmark", "rewardbench", "--data", "d"], "give exactly one of --benchmark and --data"),
        (["--data", "d", "--file", "f.jsonl"], "--file and --weights go with --benchmark"),
        (["--data", "d", "--weights", "1"], "--file and --weights go with --benchmark"),
        (["--benchmark", "rewardbench", "--split", "test"], "--split goes with --data"),
        (["--benchmark", "rewardbench", "--run-id", "abc"], "--run-id and --tracking-uri go together"),
        (
            ["--benchmark", "rewardbench", "--weights", "1"],
            "attribute weights given, but the model has a single",
        ),
        (["--benchmark", "squad"], "Invalid value for '--benchmark'"),
    ],
)
def test_bad_arguments_exit_2(models, bench_file, extra, message):
    file = ["--file", bench_file] if "--benchmark" in extra and "--split" not in extra else []
    result = CliRunner().invoke(app, ["evaluate", str(models["single"]), *extra, *file])
    assert result.exit_code == 2 and message in result.output, result.output


def test_an_unknown_or_deleted_run_stops_before_scoring(models, tracking, tmp_path, monkeypatch):
    import gazerm.evaluate.rewardbench as rewardbench

    monkeypatch.setattr(rewardbench, "evaluate_rewardbench", lambda *a, **k: pytest.fail("scored anyway"))
    args = ["evaluate", str(models["single"]), "--benchmark", "rewardbench", "--file", "f.jsonl"]
    result = CliRunner().invoke(app, [*args, "--run-id", "0" * 32, "--tracking-uri", tracking])
    assert result.exit_code == 2 and f"error: no MLflow run '{'0' * 32}' in {tracking}" in result.output
    deleted = _finished_run(tracking)
    MlflowClient(tracking).delete_run(deleted)
    result = CliRunner().invoke(app, [*args, "--run-id", deleted, "--tracking-uri", tracking])
    assert (
        result.exit_code == 2 and f"error: MLflow run '{deleted}' in {tracking} is deleted" in result.output
    )


def test_help_lists_the_evaluate_command():
    assert "evaluate" in CliRunner().invoke(app, ["--help"]).output


def test_subset_names_become_metric_keys_mlflow_accepts():
    rows = [{"subset": "mt-bench-easy"}, {"subset": "my set: v2?"}]
    report = rewardbench_report("f.jsonl", rows, [np.array([1.0, 0.0]), np.array([0.0, 1.0])])
    assert report.metrics() == {
        "rewardbench/mt-bench-easy": 1.0,
        "rewardbench/my set_ v2_": 0.0,
        "rewardbench/section/chat": 1.0,
    }
