"""Hub split pinning (``assign_to``), the ``shuffle`` split method and the reference's data setup.

A pinned source puts every row in its split; the fractions split the other rows only. ``shuffle``
must cut exactly as ``datasets``' ``train_test_split`` does, which the reference code uses with 15%
and seed 42 for its validation set (its test set is the hub's validation split).
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import gazerm.data.sources as sources
from gazerm.config import load_config
from gazerm.data.config import PrepareConfig
from gazerm.data.loaders.helpsteer2 import ATTRIBUTES
from gazerm.data.prepare import prepare
from gazerm.data.readers import read_hub_records
from gazerm.data.shards import MANIFEST_NAME, Manifest, shuffled_splits
from gazerm.errors import ConfigError
from tests.data.util import write_jsonl

REFERENCE_SPLITS = {"train": 0.85, "validation": 0.15}


def helpsteer2_rows(prompts: list[str], tie_every: int = 0) -> list[dict[str, Any]]:
    """Two responses per prompt; every ``tie_every``-th prompt's two are equally helpful (no pair)."""
    rows = []
    for i, prompt in enumerate(prompts):
        worse = 4 if tie_every and i % tie_every == 0 else i % 4
        for response, helpfulness in ((f"{prompt} good", 4), (f"{prompt} worse", worse)):
            rows.append({"prompt": prompt, "response": response, **dict.fromkeys(ATTRIBUTES, 2)})
            rows[-1]["helpfulness"] = helpfulness
    return rows


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """A local stand-in for nvidia/HelpSteer2: train.jsonl and validation.parquet, read through
    ``datasets.load_dataset`` (the "json" and "parquet" builders) as a hub dataset is."""
    monkeypatch.setattr(
        sources, "read_hub_records", partial(read_hub_records, cache_dir=str(tmp_path / "hf-cache"))
    )
    write_jsonl(tmp_path / "train.jsonl", helpsteer2_rows([f"T{i}" for i in range(120)], tie_every=10))
    validation = helpsteer2_rows([f"V{i}" for i in range(20)])
    pq.write_table(pa.Table.from_pylist(validation), tmp_path / "validation.parquet")
    return tmp_path


def _config(hub: Path, **overrides: Any) -> PrepareConfig:
    settings = {
        "sources": [
            {
                "format": "helpsteer2",
                "hub_name": "json",
                "data_files": str(hub / "train.jsonl"),
                "options": {"pairing": "reference"},
            },
            {
                "format": "helpsteer2",
                "hub_name": "parquet",
                "data_files": str(hub / "validation.parquet"),
                "options": {"pairing": "reference"},
                "assign_to": "test",
            },
        ],
        "output_dir": str(hub / "out"),
        "splits": REFERENCE_SPLITS,
        "seed": 42,
        "split_method": "shuffle",
        "gaze": {"predictor": "none"},
        **overrides,
    }
    return load_config(PrepareConfig, settings)


def _prompts(root: Path, manifest: Manifest, split: str) -> list[str]:
    paths = manifest.shard_paths(root, split)
    return [prompt for path in paths for prompt in pq.read_table(path)["prompt"].to_pylist()]


@pytest.mark.parametrize("rows", [1, 7, 20, 101, 1000])
def test_shuffle_cuts_exactly_as_datasets_train_test_split(rows):
    names = shuffled_splits(rows, 42, REFERENCE_SPLITS)
    if rows < 2:  # train_test_split refuses a split with an empty train side; ours gives it all to validation
        assert names == ["validation"]
        return
    expected = datasets.Dataset.from_dict({"i": list(range(rows))}).train_test_split(test_size=0.15, seed=42)
    assert sorted(i for i, name in enumerate(names) if name == "validation") == sorted(expected["test"]["i"])
    assert sorted(i for i, name in enumerate(names) if name == "train") == sorted(expected["train"]["i"])


def test_shuffle_with_three_fractions_takes_each_after_the_first_from_the_front():
    names = shuffled_splits(100, 0, {"train": 0.8, "validation": 0.1, "test": 0.1})
    assert (names.count("train"), names.count("validation"), names.count("test")) == (80, 10, 10)
    assert shuffled_splits(3, 0, {"train": 0.5, "validation": 0.4, "test": 0.4}).count("train") == 0


def test_pinned_source_fills_its_split_and_fractions_split_the_rest(hub):
    manifest = prepare(_config(hub))
    root = hub / "out"
    unpinned = [f"T{i}" for i in range(120) if i % 10]  # every 10th prompt is a tie: no pair
    assert sorted(_prompts(root, manifest, "test")) == sorted(f"V{i}" for i in range(20))
    validation = _prompts(root, manifest, "validation")
    assert sorted(_prompts(root, manifest, "train") + validation) == sorted(unpinned)
    assert len(validation) == math.ceil(0.15 * len(unpinned))
    # the reference: the paired train split, in load order, through train_test_split(0.15, seed=42)
    expected = datasets.Dataset.from_dict({"prompt": unpinned}).train_test_split(test_size=0.15, seed=42)
    assert sorted(validation) == sorted(expected["test"]["prompt"])

    data = json.loads((root / MANIFEST_NAME).read_text())
    assert list(data["counts"]) == ["train", "validation", "test"]
    assert [(s["assign_to"], s["examples"], s["ties"]) for s in data["sources"]] == [
        (None, 108, 12),
        ("test", 20, 0),
    ]
    assert data["splitting"] == {
        "method": "shuffle",
        "pinned_rows": {"test": 20},
        "rows_split_by_fractions": 108,
        "pinned_overlap": {"policy": "drop", "rows": 0},
        "prompts_in_several_splits": 0,
    }
    assert data["config"]["sources"][1]["assign_to"] == "test"


@pytest.mark.parametrize("method", ["shuffle", "hash"])
def test_same_seed_same_shards_other_seed_other_split(hub, method):
    first = prepare(_config(hub, split_method=method))
    again = prepare(_config(hub, split_method=method, output_dir=str(hub / "again")))
    other = prepare(_config(hub, split_method=method, seed=7, output_dir=str(hub / "other")))
    assert [s.sha256 for s in again.splits["validation"]] == [s.sha256 for s in first.splits["validation"]]
    assert _prompts(hub / "again", again, "validation") == _prompts(hub / "out", first, "validation")
    assert sorted(_prompts(hub / "other", other, "validation")) != sorted(
        _prompts(hub / "out", first, "validation")
    )
    assert _prompts(hub / "other", other, "test") == _prompts(hub / "out", first, "test")  # pinned


@pytest.mark.parametrize(("policy", "in_train_or_validation"), [("drop", 0), ("keep", 5)])
def test_prompt_in_a_pinned_and_an_unpinned_source_is_counted(hub, policy, in_train_or_validation):
    shared = [f"V{i}" for i in range(5)]  # five test prompts also asked, answered otherwise, in train
    rows = helpsteer2_rows([f"T{i}" for i in range(40)])
    rows += [{**row, "response": row["response"] + " (train)"} for row in helpsteer2_rows(shared)]
    write_jsonl(hub / "train.jsonl", rows)
    manifest = prepare(_config(hub, pinned_overlap=policy))
    root = hub / "out"
    outside_test = _prompts(root, manifest, "train") + _prompts(root, manifest, "validation")
    assert len(set(outside_test) & set(shared)) == in_train_or_validation
    assert len(outside_test) == 40 + in_train_or_validation
    assert manifest.rows("test") == 20
    assert manifest.splitting["pinned_overlap"] == {"policy": policy, "rows": 5}
    assert manifest.splitting["rows_split_by_fractions"] == 40 + in_train_or_validation
    assert manifest.splitting["prompts_in_several_splits"] == in_train_or_validation


def test_all_sources_pinned_leaves_the_fraction_splits_empty(hub):
    config = _config(hub)
    config.sources[0].assign_to = "train"
    manifest = prepare(config)
    assert (manifest.rows("train"), manifest.rows("validation"), manifest.rows("test")) == (108, 0, 20)
    assert manifest.splitting["rows_split_by_fractions"] == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sources": [{"format": "helpsteer2", "assign_to": "dev"}]}, r"sources\.0\.assign_to: Input should"),
        ({"splits": {"train": 0.85, "validation": 0.1}}, r"splits: .*sum to 1"),
        ({"splits": {"train": 0.85, "dev": 0.15}}, r"splits: .*unknown split names \['dev'\]"),
        ({"split_method": "random"}, r"split_method: Input should be 'hash', 'shuffle' or 'group_kfold'"),
        ({"pinned_overlap": "ignore"}, r"pinned_overlap: Input should be 'drop' or 'keep'"),
        (
            {"sources": [{"format": "helpsteer2", "options": {"pairing": "top2"}}]},
            r"sources\.0: .*options\.pairing: format 'helpsteer2': 'top2': .* 'all' or 'reference'",
        ),
        ({"sources": [{"format": "oasst1", "options": {"langs": "en"}}]}, r"sources\.0: .*keyword .*'langs'"),
        ({"sources": [{"format": "helpsteer3"}]}, r"sources\.0: .*unknown format 'helpsteer3'"),
    ],
)
def test_bad_config_is_an_error_naming_the_field(change, message):
    settings = {"sources": [{"format": "helpsteer2"}], "output_dir": "out", **change}
    with pytest.raises(ConfigError, match=message):
        load_config(PrepareConfig, settings)
