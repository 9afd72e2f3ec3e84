"""Job outputs through pyarrow filesystems: a local path and a URI (``file://`` here, the same code path
an ``s3://`` or ``gs://`` output_dir takes) behave the same."""

from __future__ import annotations

import json

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


def test_a_resumed_job_reopens_its_run_from_the_record(output, tmp_path):
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
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
