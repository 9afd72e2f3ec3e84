"""``gazerm prepare`` end to end on local files: shards, splits, manifest, reuse, quarantine and gaze."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import gazerm.data.prepare as prepare_module
from gazerm.data.config import SPLITS, GazeSpec, PrepareConfig, SourceSpec
from gazerm.data.errors import DataError
from gazerm.data.prepare import QUARANTINE_NAME, prepare
from gazerm.data.readers import UnreadableFileError
from gazerm.data.schema import PREFERENCE_SCHEMA, SCHEMA_VERSION
from gazerm.data.shards import MANIFEST_NAME, Manifest, verify
from gazerm.data.synthetic import readability_preferences
from gazerm.errors import ExistsError
from gazerm.features import featurize
from tests.data.util import assert_names, write_jsonl

N_PROMPTS, SETS_PER_PROMPT = 150, 2  # two response sets per prompt: both must land in one split
FRACTIONS = {"train": 0.7, "validation": 0.15, "test": 0.15}
NO_GAZE = GazeSpec(predictor="none")
LOCAL_GAZE = GazeSpec(predictor="reading_model", backend="local", batch_size=64)


@pytest.fixture
def pairs(tmp_path) -> Path:
    records = readability_preferences(N_PROMPTS * SETS_PER_PROMPT, seed=3)
    for i, record in enumerate(records):
        record["prompt"] = records[i % N_PROMPTS]["prompt"]
    return write_jsonl(tmp_path / "pairs.jsonl", records)


def _config(tmp_path: Path, *paths: Path, **overrides: Any) -> PrepareConfig:
    settings: dict[str, Any] = {
        "sources": [SourceSpec(format="generic", path=str(path)) for path in paths],
        "output_dir": str(tmp_path / "out"),
        "rows_per_shard": 40,
        "splits": FRACTIONS,
        "gaze": NO_GAZE,
        **overrides,
    }
    return PrepareConfig(**settings)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _split_table(root: Path, manifest: Manifest, split: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(path) for path in manifest.shard_paths(root, split)])


def test_running_twice_gives_byte_identical_shards_and_manifest(tmp_path, pairs):
    config = _config(tmp_path, pairs, gaze=LOCAL_GAZE)
    root = Path(config.output_dir)
    first = prepare(config)
    before, mtime = _files(root), (root / MANIFEST_NAME).stat().st_mtime_ns
    second = prepare(config, force=True)
    assert (root / MANIFEST_NAME).stat().st_mtime_ns != mtime  # really written again
    assert _files(root) == before
    assert first == second
    assert sorted(before) == sorted(
        [MANIFEST_NAME, *(s.file for split in SPLITS for s in first.splits[split])]
    )


def test_shards_hold_rows_per_shard_rows(tmp_path, pairs):
    root = tmp_path / "out"
    manifest = prepare(_config(tmp_path, pairs, rows_per_shard=40))
    for split in SPLITS:
        shards = manifest.splits[split]
        assert [s.rows for s in shards[:-1]] == [40] * (len(shards) - 1)
        assert 0 < shards[-1].rows <= 40
        assert [pq.ParquetFile(root / s.file).metadata.num_rows for s in shards] == [s.rows for s in shards]
    assert manifest.rows("train") > 40  # several shards in the largest split


def test_splits_honour_fractions_and_no_prompt_is_in_two_splits(tmp_path, pairs):
    root = tmp_path / "out"
    manifest = prepare(_config(tmp_path, pairs))
    total = N_PROMPTS * SETS_PER_PROMPT
    prompts = {}
    for split in SPLITS:
        table = _split_table(root, manifest, split)
        assert abs(table.num_rows / total - FRACTIONS[split]) < 0.07, (split, table.num_rows)
        prompts[split] = table.column("prompt").to_pylist()
    assert sum(map(len, prompts.values())) == total
    for a, b in [("train", "validation"), ("train", "test"), ("validation", "test")]:
        assert not set(prompts[a]) & set(prompts[b])
    for split_prompts in prompts.values():  # both response sets of a prompt travel together
        assert all(split_prompts.count(p) == SETS_PER_PROMPT for p in split_prompts)


def test_manifest_records_counts_hashes_schema_and_sources(tmp_path, pairs):
    root = tmp_path / "out"
    config = _config(tmp_path, pairs)
    manifest = prepare(config)
    data = json.loads((root / MANIFEST_NAME).read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["schema"] == PREFERENCE_SCHEMA.to_string(show_schema_metadata=False)
    assert data["counts"] == {split: manifest.rows(split) for split in SPLITS}
    assert sum(data["counts"].values()) == N_PROMPTS * SETS_PER_PROMPT
    assert data["sources"] == [
        {
            "format": "generic",
            "input": str(pairs),
            "examples": N_PROMPTS * SETS_PER_PROMPT,
            "ties": 0,
            "quarantined": 0,
            "too_long": 0,
            "sha256": hashlib.sha256(pairs.read_bytes()).hexdigest(),
            "assign_to": None,
        }
    ]
    assert data["splitting"] == {
        "method": "hash",
        "pinned_rows": {},
        "rows_split_by_fractions": N_PROMPTS * SETS_PER_PROMPT,
        "pinned_overlap": {"policy": "drop", "rows": 0},
        "prompts_in_several_splits": 0,
    }
    assert data["quarantine"] == {"count": 0}
    assert data["gaze_source"] is None
    assert data["config"] == config.model_dump(mode="json")
    for split in SPLITS:
        for shard in manifest.splits[split]:
            assert shard.sha256 == hashlib.sha256((root / shard.file).read_bytes()).hexdigest()
    assert Manifest.read(root) == manifest
    assert not (root / QUARANTINE_NAME).exists()


@pytest.fixture
def count_builds(monkeypatch) -> list[int]:
    """Counts how often ``prepare`` really loads its sources, i.e. rebuilds."""
    builds: list[int] = []
    load_all = prepare_module._load_all

    def counting(config):
        builds.append(1)
        return load_all(config)

    monkeypatch.setattr(prepare_module, "_load_all", counting)
    return builds


def test_same_config_reuses_the_dataset(tmp_path, pairs, count_builds):
    config = _config(tmp_path, pairs)
    first = prepare(config)
    files = _files(Path(config.output_dir))
    assert prepare(config) == first
    assert len(count_builds) == 1
    assert _files(Path(config.output_dir)) == files


@pytest.mark.parametrize(
    "change",
    [
        {"config": {"rows_per_shard": 25}},
        {"config": {"seed": 1}},
        {"force": True},
        {"tamper": "train/part-00000.parquet"},
        {"rewrite_input": True},
    ],
    ids=["rows_per_shard", "seed", "force", "tampered-shard", "rewritten-input"],
)
def test_changed_config_input_force_or_tampered_shard_rebuilds(tmp_path, pairs, count_builds, change):
    root = tmp_path / "out"
    first = prepare(_config(tmp_path, pairs))
    if "tamper" in change:
        (root / change["tamper"]).write_bytes(b"not the shard any more")
    if "rewrite_input" in change:
        pairs.write_text(pairs.read_text(encoding="utf-8").replace("?", "??"), encoding="utf-8")
    second = prepare(_config(tmp_path, pairs, **change.get("config", {})), force=change.get("force", False))
    assert len(count_builds) == 2
    assert Manifest.read(root) == second
    rows_per_shard = change.get("config", {}).get("rows_per_shard", 40)
    assert max(s.rows for s in second.splits["train"]) == rows_per_shard
    if "config" not in change and "rewrite_input" not in change:
        assert second == first


def test_rebuilding_keeps_unrelated_files_in_the_output_dir(tmp_path, pairs):
    root = tmp_path / "out"
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    prepare(_config(tmp_path, pairs, rows_per_shard=25))
    prepare(_config(tmp_path, pairs))
    assert (root / "notes.txt").read_text() == "mine"
    assert max(s.rows for s in Manifest.read(root).splits["train"]) == 40
    assert sorted(p.name for p in (root / "train").iterdir()) == [
        Path(s.file).name for s in Manifest.read(root).splits["train"]
    ]


@pytest.fixture
def bad_sources(tmp_path) -> dict[str, Path]:
    """One file with bad rows, and three files that cannot be read at all."""
    good = {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."}
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "\n".join(
            [
                json.dumps(good),
                json.dumps({**good, "prompt": None}),
                '{"prompt": "cut off',
                json.dumps({**good, "rejected": "Blue."}),
                json.dumps({**good, "prompt": "Say hi."}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    truncated = tmp_path / "truncated.json"
    truncated.write_text(json.dumps([good, good])[:-10], encoding="utf-8")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(b"prompt,chosen,rejected\nQ,a,b\nQ2,caf\xe9,b\n")
    corrupt = tmp_path / "corrupt.parquet.gz"
    corrupt.write_bytes(gzip.compress(b"not parquet"))
    return {"rows": rows, "truncated": truncated, "latin1": latin1, "corrupt": corrupt}


def test_quarantine_records_bad_rows_and_unreadable_files(tmp_path, bad_sources):
    root = tmp_path / "out"
    config = _config(tmp_path, *bad_sources.values(), on_error="quarantine")
    manifest = prepare(config)
    records = [json.loads(line) for line in (root / QUARANTINE_NAME).read_text().splitlines()]
    rows, truncated, latin1, corrupt = map(str, bad_sources.values())
    assert [(r["source"], r["file"], r["row"], r["field"], r["whole_file"]) for r in records] == [
        (rows, rows, 2, "prompt", False),
        (rows, rows, 3, None, False),
        (rows, rows, 4, "pairs[0]", False),
        (truncated, truncated, None, None, True),
        (latin1, latin1, 3, None, True),
        (corrupt, corrupt, None, None, True),
    ]
    assert "truncated line" in records[1]["error"] and "truncated file" in records[3]["error"]
    assert "not valid UTF-8" in records[4]["error"] and "Parquet" in records[5]["error"]
    assert manifest.quarantine == {
        "count": 6,
        "file": QUARANTINE_NAME,
        "by_source": {rows: 3, truncated: 1, latin1: 1, corrupt: 1},
        "by_field": {"prompt": 1, "None": 4, "pairs[0]": 1},
        "whole_files": 3,
    }
    assert [(s["input"], s["examples"], s["quarantined"]) for s in manifest.sources] == [
        (rows, 2, 3),
        (truncated, 0, 1),
        (latin1, 0, 1),
        (corrupt, 0, 1),
    ]
    assert sum(manifest.rows(split) for split in SPLITS) == 2


@pytest.mark.parametrize(
    ("name", "row", "field", "kind"),
    [
        ("rows", 2, "prompt", DataError),
        ("truncated", None, None, UnreadableFileError),
        ("latin1", 3, None, UnreadableFileError),
        ("corrupt", None, None, UnreadableFileError),
    ],
)
def test_raise_mode_stops_at_the_first_bad_input_naming_it(tmp_path, bad_sources, name, row, field, kind):
    path = bad_sources[name]
    with pytest.raises(kind) as caught:
        prepare(_config(tmp_path, path, on_error="raise"))
    assert_names(caught.value, path, row, field)
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()


def test_only_bad_input_is_an_error_even_when_quarantining(tmp_path, bad_sources):
    with pytest.raises(DataError, match="no usable examples"):
        prepare(_config(tmp_path, bad_sources["truncated"], on_error="quarantine"))


def test_local_gaze_fills_five_features_per_word(tmp_path, pairs):
    root = tmp_path / "out"
    manifest = prepare(_config(tmp_path, pairs, gaze=LOCAL_GAZE))
    assert manifest.gaze_source == "reading_model-v1"
    table = pa.concat_tables([_split_table(root, manifest, split) for split in SPLITS])
    assert set(table.column("gaze_source").to_pylist()) == {"reading_model-v1"}
    for responses, gaze in zip(
        table.column("responses").to_pylist(), table.column("gaze").to_pylist(), strict=True
    ):
        assert len(gaze) == len(responses)
        for text, per_response in zip(responses, gaze, strict=True):
            words = [text[start:end] for start, end in per_response["word_spans"]]
            assert words == text.split()
            features = np.array(per_response["features"])
            assert features.shape == (len(words), 5)
            assert np.isfinite(features).all() and (features >= 0).all() and features.any()
    # The prompt's words get theirs too (the reference gaze layout reads them).
    prompts, prompt_gaze = table.column("prompt").to_pylist(), table.column("prompt_gaze").to_pylist()
    for prompt, gaze in zip(prompts, prompt_gaze, strict=True):
        assert [prompt[start:end] for start, end in gaze["word_spans"]] == prompt.split()
        assert np.array(gaze["features"]).shape == (len(prompt.split()), 5)
    text_only = prepare(_config(tmp_path, pairs), force=True)
    for split in SPLITS:
        table = _split_table(root, text_only, split)
        assert table.column("gaze").null_count == table.column("prompt_gaze").null_count == table.num_rows


@pytest.mark.slow  # starts Ray
def test_ray_backend_writes_the_same_shards_as_local(tmp_path, pairs, ray_local):
    ray_gaze = GazeSpec(predictor="reading_model", backend="ray", batch_size=32, workers=2)
    local = prepare(_config(tmp_path, pairs, gaze=LOCAL_GAZE.model_copy(update={"batch_size": 32})))
    on_ray = prepare(_config(tmp_path, pairs, gaze=ray_gaze, output_dir=str(tmp_path / "ray")))
    for split in SPLITS:
        assert _split_table(tmp_path / "ray", on_ray, split).equals(
            _split_table(tmp_path / "out", local, split)
        )
        assert [s.sha256 for s in on_ray.splits[split]] == [s.sha256 for s in local.splits[split]]
    assert on_ray.gaze_source == local.gaze_source == "reading_model-v1"


def test_auto_gaze_backend_featurizes_a_small_set_in_process(tmp_path, pairs, monkeypatch):
    def no_ray() -> None:
        raise AssertionError("a set this small must not start Ray Data")

    monkeypatch.setattr(featurize, "init_ray", no_ray)
    manifest = prepare(_config(tmp_path, pairs, gaze=GazeSpec(predictor="reading_model")))
    assert manifest.gaze_source is not None and manifest.rows("train") > 0
    assert GazeSpec().backend == "auto"


def test_rebuilding_removes_only_what_the_old_manifest_lists(tmp_path, pairs):
    """Files of the user's inside the split folders survive a rebuild; the old shards do not."""
    root = tmp_path / "out"
    old = prepare(_config(tmp_path, pairs, rows_per_shard=25))
    (root / "train" / "notes.txt").write_text("mine")
    (root / "validation" / "part-99999.parquet").write_text("not listed")
    new = prepare(_config(tmp_path, pairs))
    assert (root / "train" / "notes.txt").read_text() == "mine"
    assert (root / "validation" / "part-99999.parquet").read_text() == "not listed"
    listed = {Path(s.file).name for s in new.splits["train"]} | {"notes.txt"}
    assert {p.name for p in (root / "train").iterdir()} == listed
    assert len(old.splits["train"]) > len(new.splits["train"])  # the old extra shards are gone


def test_a_prepare_cut_short_is_finished_by_the_next_one(tmp_path, pairs, monkeypatch):
    """Between clearing the old dataset and writing the new manifest a prepare leaves split folders and no
    manifest; its marker lets the next prepare (as gazerm train or reproduce runs it) take over."""
    import gazerm.data.prepare as preparing

    root = tmp_path / "out"
    prepare(_config(tmp_path, pairs, rows_per_shard=10))  # many shards

    def cut_short(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(preparing, "write_text_atomic", cut_short)
    with pytest.raises(KeyboardInterrupt):
        prepare(_config(tmp_path, pairs, rows_per_shard=40))
    assert not (root / "manifest.json").exists() and (root / preparing.WRITING_NAME).exists()
    (root / "train" / "notes.txt").write_text("mine")
    monkeypatch.undo()
    manifest = prepare(_config(tmp_path, pairs, rows_per_shard=80))
    assert not (root / preparing.WRITING_NAME).exists()
    written = {Path(s.file).name for s in manifest.splits["train"]}
    assert {p.name for p in (root / "train").iterdir()} == written | {"notes.txt"}  # no leftover shard


def test_split_folders_without_a_manifest_are_refused_unless_forced(tmp_path, pairs):
    root = tmp_path / "out"
    (root / "test").mkdir(parents=True)
    (root / "test" / "mine.csv").write_text("a,b\n")
    with pytest.raises(ExistsError, match=r"holds test but no manifest.json.*--force"):
        prepare(_config(tmp_path, pairs))
    assert (root / "test" / "mine.csv").read_text() == "a,b\n"
    manifest = prepare(_config(tmp_path, pairs), force=True)
    assert (root / "test" / "mine.csv").read_text() == "a,b\n"
    assert Manifest.read(root) == manifest
    prepare(_config(tmp_path, pairs, rows_per_shard=25))  # now the manifest is there: a plain rebuild
    assert (root / "test" / "mine.csv").read_text() == "a,b\n"


def test_a_tampered_manifest_cannot_delete_outside_the_dataset(tmp_path, pairs):
    root = tmp_path / "out"
    prepare(_config(tmp_path, pairs))
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    data = json.loads((root / MANIFEST_NAME).read_text())
    data["splits"]["train"].append({"file": "../victim.txt", "rows": 1, "sha256": "0"})
    data["quarantine"] = {"count": 1, "file": "../victim.txt"}
    (root / MANIFEST_NAME).write_text(json.dumps(data))
    prepare(_config(tmp_path, pairs))
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("content", ["{not json", "[]", '{"schema_version": 2, "splits": {"train": [{}]}}'])
def test_an_unreadable_manifest_is_rebuilt_not_a_traceback(tmp_path, pairs, content):
    root = tmp_path / "out"
    prepare(_config(tmp_path, pairs))
    (root / MANIFEST_NAME).write_text(content)
    with pytest.raises(DataError, match="not a manifest gazerm wrote"):
        Manifest.read(root)
    manifest = prepare(_config(tmp_path, pairs))
    assert Manifest.read(root) == manifest


def test_a_failed_rebuild_leaves_the_previous_dataset_in_place(tmp_path, pairs):
    root = tmp_path / "out"
    first = prepare(_config(tmp_path, pairs))
    broken = write_jsonl(tmp_path / "broken.jsonl", [{"prompt": "Q", "chosen": "a"}])
    with pytest.raises(DataError):
        prepare(_config(tmp_path, broken))
    assert verify(root) == first


def test_training_prepares_its_data_into_a_fresh_or_its_own_directory(tmp_path, pairs):
    """`gazerm train`'s implicit prepare (ensure_dataset) writes, then reuses, without --force."""
    from gazerm.train.config import TrainJobConfig
    from gazerm.train.job import ensure_dataset

    job = TrainJobConfig(output_dir=str(tmp_path / "run"), data={"prepare": _config(tmp_path, pairs)})
    root, manifest = ensure_dataset(job)
    assert root == str(tmp_path / "out") and Manifest.read(root) == manifest
    assert ensure_dataset(job) == (root, manifest)
