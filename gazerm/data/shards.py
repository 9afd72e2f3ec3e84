"""Parquet shards plus a manifest that Ray Data (and people) can trust.

Layout of a prepared dataset::

    OUT/manifest.json               counts, shard hashes, schema version, sources, quarantine
    OUT/train/part-00000.parquet    rows_per_shard rows each (the last shard may hold fewer)
    OUT/validation/part-00000.parquet
    OUT/test/part-00000.parquet
    OUT/quarantine.jsonl            only with on_error=quarantine: one bad input row per line

Splits are assigned by a hash of the seed and the prompt (with its context), so every
response set for one prompt lands in one split (no prompt leaks from train to test) and
re-running ``prepare`` on the same input gives byte-identical shards and manifest. The other
method, ``shuffle``, cuts a seeded permutation of the rows the way ``datasets``'
``Dataset.train_test_split`` does (the split the "Seeing Eye to AI" reference code uses); it splits
rows, not prompts. ``prepare`` may also pin a whole source to one split (``SourceSpec.assign_to``);
the fractions then split the other rows only. ``group_kfold`` splits by group (who gave the labels):
the groups are dealt into k folds balanced by rows, one fold is the test split, and validation takes
whole groups of the others (:func:`group_fold_splits`), so no group is in two splits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gazerm.cache import file_sha256
from gazerm.data.config import SPLITS, PrepareConfig, SplitMethod
from gazerm.data.errors import DataError
from gazerm.data.schema import PREFERENCE_SCHEMA, SCHEMA_VERSION
from gazerm.errors import PathNotFoundError

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"


@dataclass
class ShardInfo:
    file: str
    rows: int
    sha256: str


@dataclass
class Manifest:
    schema_version: int
    splits: dict[str, list[ShardInfo]]
    sources: list[dict[str, Any]]
    quarantine: dict[str, Any]
    gaze_source: str | None
    config: dict[str, Any]
    implicit: dict[str, Any] | None = None  # session logs, feature names and join counts (prepare)
    recorded_gaze: dict[str, Any] | None = None  # gaze.predictor=recorded: the fixation file and counts
    splitting: dict[str, Any] | None = None  # method, pinned rows, overlap counts (prepare)
    schema: str = field(default_factory=lambda: PREFERENCE_SCHEMA.to_string(show_schema_metadata=False))

    def rows(self, split: str) -> int:
        return sum(shard.rows for shard in self.splits.get(split, []))

    @property
    def gaze_predictor(self) -> str:
        """The gaze predictor the dataset was prepared with (``none``: no gaze)."""
        return self.config.get("gaze", {}).get("predictor", "none")

    def shard_paths(self, root: str | Path, split: str) -> list[str]:
        return [str(Path(root) / shard.file) for shard in self.splits.get(split, [])]

    def to_json(self) -> str:
        data = asdict(self)
        data["counts"] = {split: self.rows(split) for split in self.splits}
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    @classmethod
    def read(cls, root: str | Path) -> Manifest:
        path = Path(root) / MANIFEST_NAME
        if not path.exists():
            raise PathNotFoundError(f"{path} not found: is {root} a dataset written by 'gazerm prepare'?")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError, RecursionError) as exc:  # not UTF-8, not JSON, a directory
            raise DataError(str(path), None, None, f"not a manifest gazerm wrote ({exc})") from None
        if not isinstance(data, dict):
            raise DataError(str(path), None, None, "not a manifest gazerm wrote (not a JSON object)")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise DataError(
                str(path),
                None,
                "schema_version",
                f"{path}: schema version {data.get('schema_version')}, this gazerm reads {SCHEMA_VERSION}; "
                "re-run 'gazerm prepare'",
            )
        data.pop("counts", None)
        try:
            splits = data["splits"].items()
            data["splits"] = {name: [ShardInfo(**shard) for shard in shards] for name, shards in splits}
            return cls(**data)
        except (TypeError, KeyError, AttributeError) as exc:
            raise DataError(str(path), None, None, f"not a manifest gazerm wrote ({exc})") from None


def _position(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from a hash of the seed and a key: the same on every run and machine."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(prompt_key: str, seed: int, fractions: dict[str, float]) -> str:
    """The split a prompt belongs to: a uniform number from its hash, cut at the cumulative fractions."""
    position = _position(seed, prompt_key)
    cumulative = 0.0
    for name, fraction in fractions.items():
        cumulative += fraction
        if position < cumulative:
            return name
    return next(reversed(fractions))


def shuffled_splits(rows: int, seed: int, fractions: dict[str, float]) -> list[str]:
    """The split of each of ``rows`` rows, cut from a seeded permutation as ``datasets`` does.

    ``Dataset.train_test_split(test_size=f, seed=seed)`` draws ``np.random.default_rng(seed)
    .permutation(rows)`` and gives its first ``ceil(f * rows)`` rows to "test", the rest to "train".
    Here every split after the first takes ``ceil(fraction * rows)`` rows (at most what is left) from
    the front of that permutation, in the order the fractions are listed, and the first split takes
    the rest; so ``{train: 0.85, validation: 0.15}`` puts exactly the rows ``train_test_split
    (test_size=0.15)`` calls "test" in validation.
    """
    first, *others = fractions
    names = [first] * rows
    permutation = np.random.default_rng(seed).permutation(rows)
    start = 0
    for name in others:
        size = min(math.ceil(fractions[name] * rows), rows - start)
        for index in permutation[start : start + size]:
            names[index] = name
        start += size
    return names


def prompt_keys(table: pa.Table) -> list[str]:
    """Each row's prompt with its context: what one prompt is, for splitting and for overlap counts."""
    prompts = table.column("prompt").to_pylist()
    contexts = table.column("context").to_pylist()
    return [json.dumps([context or [], prompt]) for prompt, context in zip(prompts, contexts, strict=True)]


def split_names(keys: list[str], seed: int, fractions: dict[str, float], method: SplitMethod) -> list[str]:
    """The split of each row (given by its prompt key): by prompt hash, or cut from a permutation."""
    if method == "shuffle":
        return shuffled_splits(len(keys), seed, fractions)
    return [split_of(key, seed, fractions) for key in keys]


def group_folds(sizes: dict[str, int], seed: int, folds: int) -> dict[str, int]:
    """Each group's fold, balanced by rows as sklearn's ``GroupKFold`` deals them: the largest group first,
    each into the fold with the fewest rows so far. The seed orders equally large groups (by a hash, not
    input order) and equally full folds, so another seed deals another way where the sizes leave a choice."""
    tie = np.random.default_rng(seed).permutation(folds)
    loads = [0] * folds
    assigned = {}
    for group in sorted(sizes, key=lambda group: (-sizes[group], _position(seed, group))):
        fold = min(range(folds), key=lambda k: (loads[k], tie[k]))
        assigned[group] = fold
        loads[fold] += sizes[group]
    return assigned


def validation_groups(sizes: dict[str, int], seed: int, fraction: float) -> set[str]:
    """Whole groups for validation: in a seeded hash order, groups join until validation holds at least
    ``fraction`` of the rows (rounded up; it overshoots by less than the last group). At least one group
    must stay for training."""
    target = math.ceil(fraction * sum(sizes.values()))
    chosen: set[str] = set()
    rows = 0
    for group in sorted(sizes, key=lambda group: _position(seed, f"validation\x00{group}")):
        if rows >= target:
            break
        chosen.add(group)
        rows += sizes[group]
    if len(chosen) == len(sizes):
        raise ValueError(f"validation fraction {fraction} takes all {len(sizes)} groups left for training")
    return chosen


def group_fold_splits(groups: list[str], seed: int, folds: int, fold: int, validation: float) -> list[str]:
    """The split of each row (given by its group) under ``group_kfold``: the groups of fold ``fold`` are
    the test split, ``validation`` (a fraction of the other folds' rows) takes whole groups of the others,
    the rest is train."""
    sizes = dict(Counter(groups))
    if len(sizes) < folds:
        raise ValueError(f"{len(sizes)} groups for {folds} folds: every fold needs at least one group")
    assigned = group_folds(sizes, seed, folds)
    held_out = validation_groups({g: n for g, n in sizes.items() if assigned[g] != fold}, seed, validation)
    names = {g: "test" if assigned[g] == fold else "validation" if g in held_out else "train" for g in sizes}
    return [names[group] for group in groups]


def partition(table: pa.Table, names: list[str], splits: Iterable[str]) -> dict[str, pa.Table]:
    """The rows of each split (``names`` gives each row's), keeping input order inside each split."""
    column = pa.array(names, pa.string())
    return {name: table.filter(pc.equal(column, name)) for name in splits}


def assign_splits(
    table: pa.Table, seed: int, fractions: dict[str, float], method: SplitMethod = "hash"
) -> dict[str, pa.Table]:
    """Partition rows into splits by prompt hash (or ``shuffle``), keeping input order inside each split."""
    return partition(table, split_names(prompt_keys(table), seed, fractions, method), fractions)


def split_rows(
    table: pa.Table, pins: list[str | None], config: PrepareConfig
) -> tuple[list[str | None], dict[str, Any]]:
    """Each row's split (None: left out) and the manifest's record of how rows were split.

    Rows of pinned sources go to their source's split; the others are split by the fractions, all of
    them together (so a left-out row never moves another row's split). An unpinned row whose prompt
    (with its context) a pinned source puts in another split would be in two splits: ``pinned_overlap``
    drops or keeps it; either way it is counted, as is every prompt left in more than one split.
    """
    keys = prompt_keys(table)
    free = [i for i, pin in enumerate(pins) if pin is None]
    names: list[str | None] = list(pins)
    free_names = _split_unpinned(table, free, keys, config)
    for i, name in zip(free, free_names, strict=True):
        names[i] = name
    pinned: defaultdict[str, set[str]] = defaultdict(set)
    for key, pin in zip(keys, pins, strict=True):
        if pin is not None:
            pinned[key].add(pin)
    overlap = [i for i in free if pinned.get(keys[i], {names[i]}) - {names[i]}]
    if config.pinned_overlap == "drop":
        for i in overlap:
            names[i] = None
    in_splits: defaultdict[str, set[str]] = defaultdict(set)
    for key, name in zip(keys, names, strict=True):
        if name is not None:
            in_splits[key].add(name)
    several = sum(len(splits) > 1 for splits in in_splits.values())
    record = {
        "method": config.split_method,
        "pinned_rows": dict(Counter(pin for pin in pins if pin is not None)),
        "rows_split_by_fractions": len(free) - (len(overlap) if config.pinned_overlap == "drop" else 0),
        "pinned_overlap": {"policy": config.pinned_overlap, "rows": len(overlap)},
        "prompts_in_several_splits": several,
    }
    if config.split_method == "group_kfold":
        record["folds"] = _fold_record(table.column(config.group).to_pylist(), names, config)
    if overlap:
        log.warning(
            "%d rows of unpinned sources share their prompt with a pinned source's other split: %s",
            len(overlap),
            "dropped" if config.pinned_overlap == "drop" else "kept (pinned_overlap=keep)",
        )
    if several:  # by design under group_kfold: groups (e.g. a study's workers) label the same prompts
        report = log.info if config.split_method == "group_kfold" else log.warning
        report("%d prompts are in more than one split (see the manifest's splitting record)", several)
    return names, record


def _split_unpinned(table: pa.Table, free: list[int], keys: list[str], config: PrepareConfig) -> list[str]:
    """The split of each unpinned row: by prompt (hash), row (shuffle) or group (group_kfold)."""
    if config.split_method != "group_kfold":
        return split_names([keys[i] for i in free], config.seed, config.splits, config.split_method)
    column = table.column(config.group).to_pylist()
    groups, validation = [column[i] for i in free], config.splits.get("validation", 0.0)
    try:
        return group_fold_splits(groups, config.seed, config.folds, config.fold, validation)
    except ValueError as error:
        raise DataError(config.inputs(), None, config.group, str(error)) from None


def _fold_record(groups: list[str], names: list[str | None], config: PrepareConfig) -> dict[str, Any]:
    """What the manifest says of a group_kfold split: the column, folds, fold and groups per split."""
    in_split: defaultdict[str, set[str]] = defaultdict(set)
    for group, name in zip(groups, names, strict=True):
        in_split[name].add(group)
    counts = {name: len(in_split[name]) for name in SPLITS if name in in_split}
    return {"group": config.group, "folds": config.folds, "fold": config.fold, "groups": counts}


def write_split(table: pa.Table, root: Path, split: str, rows_per_shard: int) -> list[ShardInfo]:
    """Write one split as numbered shards; returns their relative paths, row counts and hashes."""
    directory = root / split
    directory.mkdir(parents=True, exist_ok=True)
    shards = []
    for index, start in enumerate(range(0, max(table.num_rows, 1), rows_per_shard)):
        chunk = table.slice(start, rows_per_shard)
        relative = f"{split}/part-{index:05d}.parquet"
        pq.write_table(chunk.cast(PREFERENCE_SCHEMA), root / relative, compression="zstd")
        shards.append(ShardInfo(relative, chunk.num_rows, file_sha256(root / relative)))
    return shards


def tree_sha256(root: str | Path) -> str:
    """One sha256 over every file below ``root``: each relative path and its contents' hash, in path order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root).as_posix()}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def verify(root: str | Path) -> Manifest:
    """Re-hash every shard against the manifest; raises naming the first shard that differs."""
    manifest = Manifest.read(root)
    for shards in manifest.splits.values():
        for shard in shards:
            actual = file_sha256(Path(root) / shard.file)
            if actual != shard.sha256:
                raise DataError(
                    shard.file, None, None, f"sha256 {actual} does not match the manifest ({shard.sha256})"
                )
    return manifest
