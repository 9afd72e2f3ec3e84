"""``split_method: group_kfold``: groups (who gave the labels) dealt into balanced, seeded folds; one fold is
the test split, validation takes whole groups of the others, and no group is in two splits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from gazerm.config import load_config
from gazerm.data.config import PrepareConfig
from gazerm.data.errors import DataError
from gazerm.data.prepare import prepare
from gazerm.data.shards import MANIFEST_NAME, Manifest, group_fold_splits, group_folds
from gazerm.errors import ConfigError
from tests.data.util import study_rows, write_jsonl

FOLDS = 4
SIZES = {f"w{i:02d}": 3 + i % 5 for i in range(11)}  # 11 workers, 3 to 7 rows each
GROUPED = {"split_method": "group_kfold", "folds": FOLDS, "splits": {"train": 0.8, "validation": 0.2}}


@pytest.fixture
def study(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "study.jsonl", study_rows(SIZES))


def _config(path: Path, out: Path, **settings: Any) -> PrepareConfig:
    base = {"sources": [{"format": "generic", "path": str(path)}], "output_dir": str(out)}
    return load_config(PrepareConfig, {**base, "gaze": {"predictor": "none"}, **GROUPED, **settings})


def _groups(root: Path, manifest: Manifest, split: str) -> list[str]:
    return [g for path in manifest.shard_paths(root, split) for g in pq.read_table(path)["group"].to_pylist()]


def _ids(root: Path, manifest: Manifest, split: str) -> list[str]:
    paths = manifest.shard_paths(root, split)
    return [i for path in paths for i in pq.read_table(path)["example_id"].to_pylist()]


def test_folds_are_balanced_by_rows_and_seeded():
    sizes = {"a": 10, "b": 9, "c": 5, "d": 5, "e": 4, "f": 4, "g": 2, "h": 1}
    assigned = group_folds(sizes, seed=0, folds=3)
    loads = Counter()
    for group, fold in assigned.items():
        loads[fold] += sizes[group]
    assert sorted(loads.values()) == [13, 13, 14]  # the largest group first, each into the lightest fold
    assert group_folds(sizes, seed=0, folds=3) == assigned
    equal = {f"g{i}": 1 for i in range(9)}  # only the seed decides among equally large groups
    assert len({tuple(sorted(group_folds(equal, seed, 3).items())) for seed in range(5)}) > 1


def test_validation_takes_whole_groups_until_it_reaches_its_fraction():
    groups = [g for g, n in SIZES.items() for _ in range(n)]
    names = group_fold_splits(groups, seed=3, folds=FOLDS, fold=1, validation=0.2)
    split_of = {g: {n for g2, n in zip(groups, names, strict=True) if g2 == g} for g in SIZES}
    assert all(len(splits) == 1 for splits in split_of.values())  # a group is in one split
    outside_test = sum(name != "test" for name in names)
    validation = names.count("validation")
    last_group = max(SIZES.values())
    assert 0.2 * outside_test <= validation < 0.2 * outside_test + last_group


def test_every_fold_is_test_once_and_no_group_is_in_two_splits(study, tmp_path):
    tests = []
    for fold in range(FOLDS):
        root = tmp_path / f"fold{fold}"
        manifest = prepare(_config(study, root, fold=fold))
        groups = {split: set(_groups(root, manifest, split)) for split in ("train", "validation", "test")}
        assert not (groups["train"] & groups["validation"] or groups["train"] & groups["test"])
        assert not groups["validation"] & groups["test"] and all(groups.values())
        assert manifest.splitting["folds"] == {
            "group": "group",
            "folds": FOLDS,
            "fold": fold,
            "groups": {split: len(names) for split, names in groups.items()},
        }
        assert manifest.splitting["method"] == "group_kfold"
        tests.append(_ids(root, manifest, "test"))
    every = [i for ids in tests for i in ids]
    assert len(every) == len(set(every)) == sum(SIZES.values())  # disjoint, and together every row


def test_the_same_config_gives_the_same_shards(study, tmp_path):
    first = prepare(_config(study, tmp_path / "a", fold=2))
    again = prepare(_config(study, tmp_path / "b", fold=2))
    assert (tmp_path / "a" / MANIFEST_NAME).read_text().replace("/a", "/b") == (
        tmp_path / "b" / MANIFEST_NAME
    ).read_text()
    assert [s.sha256 for shards in first.splits.values() for s in shards] == [
        s.sha256 for shards in again.splits.values() for s in shards
    ]


def test_a_row_without_a_group_is_named_or_quarantined(tmp_path):
    rows = study_rows(SIZES)
    del rows[4]["group"]
    path = write_jsonl(tmp_path / "study.jsonl", rows)
    with pytest.raises(DataError) as raised:
        prepare(_config(path, tmp_path / "out", fold=0))
    assert (raised.value.file, raised.value.row, raised.value.field) == (str(path), 5, "group")
    manifest = prepare(_config(path, tmp_path / "out", fold=0, on_error="quarantine"))
    assert manifest.quarantine["by_field"] == {"group": 1}
    assert sum(manifest.rows(split) for split in manifest.splits) == len(rows) - 1


def test_fewer_groups_than_folds_is_a_data_error(tmp_path):
    path = write_jsonl(tmp_path / "study.jsonl", study_rows({"w0": 3, "w1": 2}))
    with pytest.raises(DataError, match=r"field 'group': 2 groups for 4 folds"):
        prepare(_config(path, tmp_path / "out", fold=0))


def test_a_manifest_written_before_the_fold_settings_is_reused(study, tmp_path):
    config = _config(study, tmp_path / "out", split_method="hash", folds=None, splits={"train": 1.0})
    prepare(config)
    path = tmp_path / "out" / MANIFEST_NAME
    data = json.loads(path.read_text())
    for name in ("group", "folds", "fold"):
        del data["config"][name]
    path.write_text(json.dumps(data))
    assert prepare(config).config == data["config"]  # reused, not rebuilt


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"split_method": "hash", "folds": None, "fold": 1}, r"fold: only split_method=group_kfold takes"),
        ({"split_method": "hash", "folds": 5}, r"folds: only split_method=group_kfold"),
        ({"split_method": "hash", "folds": None, "group": "domain"}, r"group: only split_method=group_kfold"),
        ({"fold": 4}, r"needs folds \(at least 2\) and fold \(0 to folds - 1\)"),
        ({"folds": None, "fold": 0}, r"needs folds"),
        ({"folds": 1, "fold": 0}, r"folds: Input should be greater than or equal to 2"),
        ({"fold": 0, "splits": {"train": 0.8, "test": 0.2}}, r"the test split is fold `fold`"),
        ({"fold": 0, "group": "prompt"}, r"group: Input should be 'group' or 'domain'"),
    ],
)
def test_settings_that_do_not_fit_group_kfold_are_refused(study, tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        _config(study, tmp_path, **change)


def test_a_pinned_source_is_refused_under_group_kfold(study, tmp_path):
    pinned = [{"format": "generic", "path": str(study), "assign_to": "test"}]
    with pytest.raises(ConfigError, match=r"splits every row by group; .* pin assign_to"):
        _config(study, tmp_path, fold=0, sources=pinned)


def test_overrides_of_a_hash_config_do_not_count_as_fold_settings(study, tmp_path):
    settings = {"sources": [{"format": "generic", "path": str(study)}], "output_dir": str(tmp_path)}
    assert load_config(PrepareConfig, settings, {"seed": 3}).folds is None  # defaults are dumped back in
