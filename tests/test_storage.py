"""Job outputs through pyarrow filesystems: a local path and a URI (``file://`` here, the same code path
an ``s3://`` or ``gs://`` output_dir takes) behave the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gazerm.storage import Storage
from gazerm.track.mlflow_tracking import RUN_ID_FILE, start_run
from gazerm.train.checkpoints import FILE_LIST, LISTED, RAY_RUN_NAME, STATE_FILE, latest_checkpoint


@pytest.fixture(params=["path", "uri"])
def output(request, tmp_path) -> Storage:
    directory = tmp_path / "out"
    return Storage.of(directory.as_uri() if request.param == "uri" else str(directory))


def test_uri_and_path_name_the_same_directory(tmp_path):
    by_uri, by_path = Storage.of((tmp_path / "out").as_uri()), Storage.of(tmp_path / "out")
    assert by_uri.path == by_path.path == str(tmp_path / "out")
    assert by_uri.uri == (tmp_path / "out").as_uri() and by_path.uri == str(tmp_path / "out")
    assert Storage.of("relative/dir").path.startswith("/")


def test_write_read_list_and_delete(output, tmp_path):
    assert not output.exists() and output.subdirectories() == []
    output.child("b_dir").child("f.txt").write_text("two")
    output.child("a_dir").child("f.txt").write_text("one")
    output.child("file.txt").write_text("not a directory")
    assert [d.name for d in output.subdirectories()] == ["a_dir", "b_dir"]
    assert [d.name for d in output.subdirectories("b")] == ["b_dir"]
    assert output.child("a_dir").child("f.txt").read_text() == "one"
    output.delete()
    assert not output.exists() and not (tmp_path / "out").exists()


def test_replace_with_copies_a_local_directory_over_what_was_there(output, tmp_path):
    source = tmp_path / "model"
    (source / "adapter").mkdir(parents=True)
    (source / "config.yaml").write_text("a: 1\n")
    (source / "adapter" / "weights.bin").write_bytes(b"\x00\x01")
    target = output.child("model")
    target.child("stale.txt").write_text("old")
    target.replace_with(source)
    copied = tmp_path / "out" / "model"
    assert sorted(p.relative_to(copied).as_posix() for p in copied.rglob("*")) == [
        "adapter",
        "adapter/weights.bin",
        "config.yaml",
    ]
    assert (copied / "adapter" / "weights.bin").read_bytes() == b"\x00\x01"


def test_latest_checkpoint_is_the_highest_complete_step(output):
    """On a path and an object-store URI alike: file sizes are checked through the same filesystem."""
    runs = output.child(RAY_RUN_NAME)
    for name, step in (("checkpoint_a", 8), ("checkpoint_b", 4), ("checkpoint_d", 12)):
        state = json.dumps({"step": step, "layout": {"world_size": 1}, LISTED: True})
        runs.child(name).child(STATE_FILE).write_text(state)
        listed = {STATE_FILE: len(state), "weights.bin": 4}
        runs.child(name).child(FILE_LIST.format(rank=0)).write_text(json.dumps(listed))
        runs.child(name).child("weights.bin").write_text("full" if step < 12 else "cut")  # d: torn
    runs.child("checkpoint_c").child("partial.bin").write_text("no state: an interrupted save")
    assert latest_checkpoint(output) == runs.child("checkpoint_a").uri
    assert latest_checkpoint(output.child("elsewhere")) is None


def test_a_resumed_job_reopens_its_run_from_the_record(output, tracking_uri):
    first = start_run(tracking_uri, "exp", "job", {"a": 1}, output.uri)
    assert json.loads(output.child(RUN_ID_FILE).read_text())["run_id"] == first
    assert start_run(tracking_uri, "exp", "job", {"a": 1}, output.uri) == first


def test_searches_and_staged_jobs_refuse_an_object_store_output_dir():
    from gazerm.train.config import TrainJobConfig
    from gazerm.train.stages import StagedJobConfig
    from gazerm.tune.search import run_search

    remote = TrainJobConfig(output_dir="s3://bucket/runs/job")
    with pytest.raises(ValueError, match="a search needs a local or mounted path"):
        run_search(remote, None)
    with pytest.raises(ValueError, match="staged jobs need a local or mounted path"):
        StagedJobConfig(base=remote, stages=[{"name": "general", "dataset_dir": "data"}])


def _model_dir(root) -> object:
    source = root / "model"
    (source / "adapter").mkdir(parents=True)
    (source / "adapter" / "weights.bin").write_bytes(b"\x00\x01")
    (source / "config.yaml").write_text("a: 1\n")
    (source / "model_manifest.json").write_text("{}")
    return source


def test_replace_with_never_shows_a_half_copied_directory_locally(output, tmp_path, monkeypatch):
    """A copy that fails midway leaves the old directory whole and nothing staged beside it."""
    import shutil

    source = _model_dir(tmp_path)
    target = output.child("model")
    target.child("old.txt").write_text("old")

    def failing_copy(src, dst, **_):
        (Path(dst) / "partial.bin").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copytree", failing_copy)
    with pytest.raises(OSError, match="disk full"):
        target.replace_with(source)
    assert sorted(p.name for p in (tmp_path / "out" / "model").iterdir()) == ["old.txt"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model"]


def test_replace_with_on_an_object_store_writes_the_commit_file_last(tmp_path):
    """Not a local filesystem (a SubTree one stands in for s3://): the manifest goes first and comes last."""
    import pyarrow.fs as pafs

    (tmp_path / "bucket").mkdir()
    written: list[str] = []

    class Recording(pafs.FSSpecHandler):
        def open_output_stream(self, path, metadata):
            written.append(path.rsplit("/model/", 1)[-1])
            return super().open_output_stream(path, metadata)

    import fsspec

    filesystem = pafs.PyFileSystem(Recording(fsspec.filesystem("file")))
    target = Storage(filesystem, str(tmp_path / "bucket" / "model"), "s3://bucket/model")
    assert not target.is_local
    target.child("model_manifest.json").write_text("{old}")
    target.child("stale.bin").write_text("old")
    written.clear()
    target.replace_with(_model_dir(tmp_path), commit_file="model_manifest.json")
    assert written == ["adapter/weights.bin", "config.yaml", "model_manifest.json"]
    assert not (tmp_path / "bucket" / "model" / "stale.bin").exists()
    assert (tmp_path / "bucket" / "model" / "model_manifest.json").read_text() == "{}"


def _write(writer: str, target: Path, text: str) -> None:
    from gazerm.storage import write_text_atomic

    if writer == "helper":
        write_text_atomic(target, text)
    else:
        Storage.of(target).write_text(text)


@pytest.mark.parametrize("writer", ["helper", "storage"])
def test_write_text_atomic_leaves_the_old_content_when_writing_fails(tmp_path, monkeypatch, writer):
    """reproduce's result.json and reports (the helper), the MLflow run record (Storage.write_text)."""
    import os

    target = tmp_path / "result.json"
    _write(writer, target, '{"old": 1}')

    def failing_fsync(_):
        raise OSError("no space")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="no space"):
        _write(writer, target, '{"new": 2}')
    assert target.read_text() == '{"old": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
