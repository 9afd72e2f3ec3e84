"""Readers: a file that cannot be parsed at all is one error naming it (and its line where known), and a
hub dataset that cannot be loaded is an error naming the dataset and split."""

from __future__ import annotations

import gzip
import json
from functools import partial

import datasets
import huggingface_hub
import pytest

from gazerm.data.errors import DataError
from gazerm.data.readers import (
    UnreadableFileError,
    download_hub_file,
    hub_label,
    read_hub_records,
    read_records,
)
from tests.data.util import assert_names, write_jsonl

GOOD = {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."}
CSV_HEADER = b"prompt,chosen,rejected\n"


def _unreadable(path) -> UnreadableFileError:
    with pytest.raises(UnreadableFileError) as caught:
        list(read_records(path))
    return caught.value


# mtime=0: a gzip header holds its time, and a test id that holds it differs between the two xdist
# workers that collect it a second apart ("Different tests were collected")
@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("pairs.json", json.dumps([GOOD, GOOD])[:-10].encode(), "truncated file?"),
        ("pairs.json", b'[{"prompt": "caf\xe9"}]', "not valid UTF-8 at byte 16"),
        ("pairs.json", json.dumps({"rows": [GOOD]}).encode(), "expected a JSON array"),
        (
            "pairs.json.gz",
            gzip.compress(json.dumps([GOOD] * 50).encode(), mtime=0)[:40],
            "truncated or corrupt",
        ),
        ("pairs.csv.gz", gzip.compress(CSV_HEADER + b"Q,a,b\n" * 50, mtime=0)[:30], "truncated or corrupt"),
        ("pairs.parquet", b"PAR1 not really parquet", "not a readable Parquet file"),
    ],
)
def test_a_file_that_does_not_parse_is_one_error_without_a_row(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    error = _unreadable(path)
    assert_names(error, path, None, None)
    assert message in error.message


def test_non_utf8_csv_names_the_line_of_the_bad_byte(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_bytes(CSV_HEADER + b"Q1,a,b\nQ2,a,b\nQ3,caf\xe9,b\n")
    error = _unreadable(path)
    assert_names(error, path, 4, None)
    assert "not valid UTF-8" in error.message


def test_missing_file_and_unknown_type_are_not_unreadable_files(tmp_path):
    """Configuration mistakes: quarantining them would hide a wrong path behind an empty dataset."""
    for path in (tmp_path / "absent.jsonl", write_jsonl(tmp_path / "pairs.txt", [GOOD])):
        with pytest.raises(DataError) as caught:
            list(read_records(path))
        assert not isinstance(caught.value, UnreadableFileError)
        assert_names(caught.value, path, None, None)


def test_hub_label_names_the_split_and_local_files():
    assert hub_label("nvidia/HelpSteer2", "validation", None) == "nvidia/HelpSteer2[validation]"
    assert hub_label("json", "train", ["a.jsonl", "b.jsonl"]) == "json[train] (a.jsonl, b.jsonl)"


@pytest.mark.parametrize(
    "failure",
    [ConnectionError("no network"), datasets.exceptions.DatasetNotFoundError("nope/nothing not found")],
)
def test_hub_load_failure_names_the_dataset_and_split(monkeypatch, failure):
    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(DataError) as caught:
        list(read_hub_records("nope/nothing", "validation"))
    assert_names(caught.value, "nope/nothing[validation]", None, None)
    assert f"{type(failure).__name__}: {failure}" in caught.value.message
    assert caught.value.__cause__ is failure


@pytest.mark.parametrize(
    ("content", "exists"), [(b'{"prompt": "Q", "chosen": "a", "rejected"', True), (b"", False)]
)
def test_corrupt_or_missing_local_builder_file_names_the_dataset(tmp_path, content, exists):
    path = tmp_path / "pairs.jsonl"
    if exists:
        path.write_bytes(content)
    read = partial(read_hub_records, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError) as caught:
        list(read("json", "train", data_files=str(path)))
    assert_names(caught.value, f"json[train] ({path})", None, None)
    assert "cannot load the dataset" in caught.value.message


def test_hub_file_download_failure_names_the_dataset_and_file(monkeypatch):
    failure = ConnectionError("no network")

    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)
    with pytest.raises(DataError) as caught:
        download_hub_file("hbXNov/sparse_feedback", "absolute_gpt_3.5_turbo_score.csv")
    assert_names(caught.value, "hbXNov/sparse_feedback/absolute_gpt_3.5_turbo_score.csv", None, None)
    assert "cannot download the file (ConnectionError: no network)" in caught.value.message
    assert caught.value.__cause__ is failure


def test_a_data_error_crosses_a_process_boundary_whole():
    """The local launcher's ranks hand their error to the driver pickled: file, row and field survive."""
    import pickle

    error = pickle.loads(pickle.dumps(DataError("pairs.jsonl", 7, "chosen", "empty response")))
    assert (error.file, error.row, error.field) == ("pairs.jsonl", 7, "chosen")
    assert str(error) == "pairs.jsonl, row 7, field 'chosen': empty response"
