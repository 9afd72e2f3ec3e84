"""Shard writer, split assignment and manifest: the guarantees training relies on to trust a dataset."""

from __future__ import annotations

import hashlib
import json
import re

import pyarrow.parquet as pq
import pytest

from gazerm.data.schema import PREFERENCE_SCHEMA, SCHEMA_VERSION, PreferenceExample, examples_to_table
from gazerm.data.shards import MANIFEST_NAME, Manifest, assign_splits, split_of, verify, write_split

FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def _table(prompts: list[str]):
    return examples_to_table(
        [
            PreferenceExample("t", "f.jsonl", row, prompt, [f"a{row}", f"b{row}"], "pairwise")
            for row, prompt in enumerate(prompts, start=1)
        ]
    )


def _manifest(root, table) -> Manifest:
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        splits={
            name: write_split(part, root, name, 7)
            for name, part in assign_splits(table, 0, FRACTIONS).items()
        },
        sources=[{"format": "generic", "input": "f.jsonl", "examples": table.num_rows, "quarantined": 0}],
        quarantine={"count": 0},
        gaze_source=None,
        config={"seed": 0},
    )
    (root / MANIFEST_NAME).write_text(manifest.to_json())
    return manifest


def test_write_split_respects_rows_per_shard_and_hashes_each_file(tmp_path):
    table = _table([f"Q{i}" for i in range(23)])
    shards = write_split(table, tmp_path, "train", rows_per_shard=10)
    assert [(s.file, s.rows) for s in shards] == [
        ("train/part-00000.parquet", 10),
        ("train/part-00001.parquet", 10),
        ("train/part-00002.parquet", 3),
    ]
    for shard in shards:
        written = pq.read_table(tmp_path / shard.file)
        assert written.num_rows == shard.rows
        assert written.schema.equals(PREFERENCE_SCHEMA)
        assert shard.sha256 == hashlib.sha256((tmp_path / shard.file).read_bytes()).hexdigest()
    back = [
        prompt for s in shards for prompt in pq.read_table(tmp_path / s.file).column("prompt").to_pylist()
    ]
    assert back == [f"Q{i}" for i in range(23)]


def test_empty_split_is_one_empty_shard_so_readers_still_find_the_schema(tmp_path):
    (shard,) = write_split(_table(["Q"]).slice(0, 0), tmp_path, "test", rows_per_shard=10)
    assert (shard.file, shard.rows) == ("test/part-00000.parquet", 0)
    assert pq.read_table(tmp_path / shard.file).schema.equals(PREFERENCE_SCHEMA)


def test_split_of_is_stable_and_seeded():
    assert split_of("prompt", 0, FRACTIONS) == split_of("prompt", 0, FRACTIONS)
    keys = [f"p{i}" for i in range(2000)]
    assert [split_of(k, 0, FRACTIONS) for k in keys] != [split_of(k, 1, FRACTIONS) for k in keys]
    assert {split_of(k, 0, {"train": 1.0, "test": 0.0}) for k in keys} == {"train"}


def test_assign_splits_keeps_every_prompt_in_one_split_in_input_order():
    prompts = [f"Q{i % 400}" for i in range(1200)]  # three response sets per prompt, not consecutive
    splits = assign_splits(_table(prompts), 0, FRACTIONS)
    seen = {name: set(part.column("prompt").to_pylist()) for name, part in splits.items()}
    assert not seen["train"] & seen["validation"] and not seen["train"] & seen["test"]
    assert not seen["validation"] & seen["test"]
    for name, part in splits.items():
        assert abs(part.num_rows / 1200 - FRACTIONS[name]) < 0.05, (name, part.num_rows)
        rows = part.column("source_row").to_pylist()
        assert rows == sorted(rows)
    assert sum(part.num_rows for part in splits.values()) == 1200


def test_manifest_round_trips_with_counts(tmp_path):
    manifest = _manifest(tmp_path, _table([f"Q{i}" for i in range(50)]))
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert data["counts"] == {name: manifest.rows(name) for name in FRACTIONS}
    assert sum(data["counts"].values()) == 50
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["schema"] == PREFERENCE_SCHEMA.to_string(show_schema_metadata=False)
    assert Manifest.read(tmp_path) == manifest
    assert verify(tmp_path) == manifest
    assert manifest.shard_paths(tmp_path, "train")[0] == str(tmp_path / "train/part-00000.parquet")


def test_verify_names_a_tampered_shard(tmp_path):
    manifest = _manifest(tmp_path, _table([f"Q{i}" for i in range(50)]))
    tampered = manifest.splits["train"][1]
    path = tmp_path / tampered.file
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(
        ValueError, match=rf"^{re.escape(tampered.file)}: sha256 [0-9a-f]{{64}} does not match"
    ):
        verify(tmp_path)


def test_verify_reports_a_missing_shard_and_manifest(tmp_path):
    manifest = _manifest(tmp_path, _table([f"Q{i}" for i in range(50)]))
    (tmp_path / manifest.splits["test"][0].file).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape("test/part-00000.parquet")):
        verify(tmp_path)
    with pytest.raises(FileNotFoundError, match="gazerm prepare"):
        verify(tmp_path / "elsewhere")


def test_other_schema_version_asks_for_a_new_prepare(tmp_path):
    _manifest(tmp_path, _table(["Q"]))
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({**data, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(ValueError, match="re-run 'gazerm prepare'"):
        Manifest.read(tmp_path)
