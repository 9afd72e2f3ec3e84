"""Batch scoring as a Ray Data job: the same rewards as in-process scoring, every row kept."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from gazerm.cli import app
from gazerm.data.errors import DataError
from gazerm.score import RewardScorer, input_files, score_dataset, score_file
from tests.conftest import save_random_model

CONTEXT = [
    {"role": "user", "content": "Hello there."},
    {"role": "assistant", "content": "Hi! How can I help?"},
]
TOPICS = ("bread", "chess", "taxes", "sleep", "python", "travel", "budgets")


def _rows(count: int) -> list[dict]:
    return [
        {
            "id": i,
            "prompt": f"Tell me about {TOPICS[i % len(TOPICS)]}, please (#{i}).",
            "response": "It is easy to do well. " * (1 + i % 4) + f"Try step {i}.",
            "context": CONTEXT if i % 3 == 0 else None,
        }
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_random_model(tmp_path_factory.mktemp("rm") / "model", max_length=64)


def _write_shards(directory, rows: list[dict], shards: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for shard in range(shards):
        pq.write_table(pa.Table.from_pylist(rows[shard::shards]), directory / f"part-{shard}.parquet")


@pytest.mark.slow  # starts Ray
def test_ray_job_gives_the_in_process_rewards_for_every_row(model_dir, tmp_path, ray_local):
    rows = _rows(23)
    _write_shards(tmp_path / "in", rows, shards=3)

    out = tmp_path / "out"
    args = [
        "score",
        str(model_dir),
        str(tmp_path / "in"),
        "--output",
        str(out),
        "--workers",
        "2",
        "--batch-size",
        "4",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"scored {len(rows)} rows → {out}" in result.output

    scored = pq.read_table(out).to_pylist()
    assert len(scored) == len(rows)
    by_id = {row["id"]: row for row in scored}
    assert sorted(by_id) == [row["id"] for row in rows]
    assert all({k: v for k, v in by_id[r["id"]].items() if k != "reward"} == r for r in rows)
    got = np.array([by_id[row["id"]]["reward"] for row in rows])
    expected = RewardScorer(model_dir).score(
        [r["prompt"] for r in rows], [r["response"] for r in rows], [r["context"] for r in rows]
    )
    assert np.allclose(got, expected, atol=1e-5)
    assert np.ptp(got) > 1e-3  # the rows really get different rewards

    score_file(model_dir, tmp_path / "in" / "part-0.parquet", tmp_path / "file.jsonl")
    from_file = [json.loads(line) for line in (tmp_path / "file.jsonl").read_text().splitlines()]
    assert len(from_file) == 8
    assert np.allclose(
        [r["reward"] for r in from_file], [by_id[r["id"]]["reward"] for r in from_file], atol=1e-5
    )


def test_a_bad_row_stops_the_job_naming_file_row_and_field(model_dir, tmp_path):
    rows = _rows(6)
    rows[4]["response"] = "  "
    _write_shards(tmp_path / "in", rows, shards=2)  # row 4 is the third row of part-0
    with pytest.raises(DataError, match="empty") as caught:
        score_dataset(model_dir, tmp_path / "in", tmp_path / "out")
    error = caught.value
    assert (error.file, error.row, error.field) == (str(tmp_path / "in" / "part-0.parquet"), 3, "response")
    assert not (tmp_path / "out").exists()


def test_a_file_without_the_prompt_column_is_named(model_dir, tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": "Why?", "response": "Because."}]), path)
    with pytest.raises(DataError, match="missing") as caught:
        score_dataset(model_dir, path, tmp_path / "out")
    assert (caught.value.file, caught.value.field) == (str(path), "prompt")


def test_input_files_are_one_kind(tmp_path):
    (tmp_path / "b.jsonl").write_text("{}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.jsonl").write_text("{}\n")
    assert input_files(tmp_path) == [str(tmp_path / "b.jsonl"), str(tmp_path / "sub" / "a.jsonl")]
    (tmp_path / "c.parquet").write_bytes(b"")
    with pytest.raises(DataError, match=r"one kind, got: \.jsonl, \.parquet"):
        input_files(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="got: none"):
        input_files(tmp_path / "empty")


def test_gpu_without_workers_is_refused(model_dir, tmp_path):
    result = CliRunner().invoke(app, ["score", str(model_dir), "in.jsonl", "--output", "o.jsonl", "--gpu"])
    assert result.exit_code == 2 and "give --workers too" in result.output
