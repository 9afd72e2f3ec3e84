"""``iter_source``: format lookup, local vs hub input, validation, limit and options."""

from __future__ import annotations

from functools import partial

import pytest

import gazerm.data.sources as sources
from gazerm.data.errors import DataError
from gazerm.data.loaders.helpsteer2 import ATTRIBUTES
from gazerm.data.readers import read_hub_records
from gazerm.data.schema import PreferenceExample
from gazerm.data.sources import iter_source
from tests.data.util import assert_names, examples, write_jsonl

PAIR = {"prompt": "Q", "chosen": "good", "rejected": "bad"}


def test_importing_sources_registers_every_format():
    expected = {
        "generic",
        "helpsteer2",
        "oasst1",
        "hh_rlhf",
        "dsp",
        "dsp_domain",
        "sparse_feedback_ratings",
        "sparse_feedback_rankings",
        "sparse_feedback_rm_json",
    }
    assert expected <= set(sources.FORMATS)


def test_unknown_format_lists_the_known_ones(tmp_path):
    with pytest.raises(DataError) as caught:
        list(iter_source("nope", tmp_path / "x.jsonl"))
    assert caught.value.field == "format"
    assert "'nope'" in caught.value.message
    assert "generic" in caught.value.message and "oasst1" in caught.value.message


def test_limit_counts_examples_not_errors(tmp_path):
    rows = [PAIR, {**PAIR, "prompt": 1}, *({**PAIR, "prompt": f"Q{i}"} for i in range(5))]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    items = list(iter_source("generic", path, limit=2))
    assert [type(item) for item in items] == [PreferenceExample, DataError, PreferenceExample]
    assert [items[0].source_row, items[1].row, items[2].source_row] == [1, 2, 3]


def test_failed_validation_is_yielded_not_skipped(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{**PAIR, "rejected": "good"}, PAIR])
    error, example = iter_source("generic", path)
    assert_names(error, path, 1, "pairs[0]")
    assert example.source_row == 2


def test_unknown_option_is_an_error_before_reading(tmp_path):
    with pytest.raises(DataError) as caught:
        next(iter_source("generic", tmp_path / "absent.jsonl", lang="en"))
    assert_names(caught.value, tmp_path / "absent.jsonl", None, "options")
    assert "lang" in caught.value.message


def test_format_without_hub_dataset_needs_a_path():
    with pytest.raises(DataError) as caught:
        next(iter_source("generic"))
    assert caught.value.field == "path"


def test_without_path_reads_the_formats_hub_dataset(monkeypatch):
    calls = []

    def fake_hub(name, split, data_files=None):
        calls.append((name, split, data_files))
        yield 1, {"prompt": "P", "response": "r", **dict.fromkeys(ATTRIBUTES, 2)}

    monkeypatch.setattr(sources, "read_hub_records", fake_hub)
    (example,) = examples(list(iter_source("helpsteer2", split="validation")))
    assert calls == [("nvidia/HelpSteer2", "validation", None)]
    assert (example.source_file, example.source_row, example.responses) == (
        "nvidia/HelpSteer2[validation]",
        1,
        ["r"],
    )


def test_hub_json_builder_with_local_data_files(tmp_path, monkeypatch):
    """The path DSP's JSON release takes: ``hub_name="json"`` + ``data_files``, through real ``datasets``."""
    data = write_jsonl(tmp_path / "pairs.jsonl", [PAIR, {**PAIR, "chosen": ""}])
    monkeypatch.setattr(
        sources, "read_hub_records", partial(read_hub_records, cache_dir=str(tmp_path / "cache"))
    )
    example, error = iter_source("generic", hub_name="json", data_files=str(data))
    label = f"json[train] ({data})"
    assert (example.source_file, example.source_row, example.responses) == (label, 1, ["good", "bad"])
    assert_names(error, label, 2, "chosen")
