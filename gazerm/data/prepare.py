"""``gazerm prepare``: sources → validated examples → gaze features → split Parquet shards + manifest."""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import math
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from tqdm import tqdm

from gazerm.config import OutputDir, output_dir_problem
from gazerm.data.errors import DataError
from gazerm.data.implicit_join import OnMissing, add_implicit, session_hashes
from gazerm.data.length_filter import LengthFilter
from gazerm.data.loaders.base import SourceReport, Tie
from gazerm.data.readers import UnreadableFileError
from gazerm.data.recorded_join import add_recorded_gaze
from gazerm.data.schema import PREFERENCE_SCHEMA, SCHEMA_VERSION, PreferenceExample, examples_to_table
from gazerm.data.shards import (
    MANIFEST_NAME,
    SPLITS,
    Manifest,
    SplitMethod,
    SplitName,
    file_sha256,
    group_fold_splits,
    partition,
    prompt_keys,
    split_names,
    tree_sha256,
    verify,
    write_split,
)
from gazerm.data.source_behaviour import clear_source_gaze, keep_source_gaze, source_implicit
from gazerm.data.sources import check_options, iter_source
from gazerm.errors import ConfigError, ExistsError
from gazerm.runtime import init_ray
from gazerm.storage import write_text_atomic

log = logging.getLogger(__name__)

QUARANTINE_NAME = "quarantine.jsonl"
WRITING_NAME = ".prepare-writing"  # from clearing the old dataset until the new manifest is written

OnError = Literal["raise", "quarantine"]
PinnedOverlap = Literal["drop", "keep"]
GroupColumn = Literal["group", "domain"]


class SourceSpec(BaseModel):
    """One input: a registered format read from a local ``path`` or, without one, from the hub.

    ``split`` is the hub split read; ``assign_to`` pins every row of the source to one split of the
    prepared dataset (e.g. a hub's validation split as the test set), where the fractions of
    ``PrepareConfig.splits`` split the rows of the unpinned sources. ``options`` go to the format's
    parser (e.g. ``pairing``, ``lang``) and are checked against it when the config is read.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    format: str
    path: str | None = None
    hub_name: str | None = None
    split: str = "train"
    data_files: str | list[str] | None = None
    limit: int | None = Field(default=None, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)
    assign_to: SplitName | None = None

    @model_validator(mode="after")
    def _known_format_and_options(self) -> SourceSpec:
        try:
            check_options(self.format, self.options)
        except DataError as error:
            raise ValueError(f"{error.field}: {error.message}") from None
        return self

    def describe(self) -> str:
        return self.path or f"{self.hub_name or self.format}[{self.split}]"


# Below this many rows the reading model featurizes in process faster than Ray Data starts its actors
# (1,200 quickstart rows: 1.4 s in process, 15 s through Ray Data with 2 actors on 2 cores).
AUTO_LOCAL_ROWS = 20_000


class GazeSpec(BaseModel):
    """Which gaze predictor fills the ``gaze`` column; ``none`` leaves it empty (text-only models);
    ``recorded`` reads an eye-tracking study's fixations from ``path`` (``gazerm.data.recorded_join``);
    ``source`` keeps the gaze the source recorded with its examples (IFLLM; ``data.source_behaviour``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    predictor: Literal["reading_model", "transformer", "fmv1", "fmv2", "recorded", "source", "none"] = (
        "reading_model"
    )
    path: str | None = Field(
        default=None,
        description="transformer: checkpoint directory; fmv1/fmv2: the checkpoint file eyetrackpy publishes; "
        "recorded: the fixation table (Parquet or CSV)",
    )
    base: str | None = Field(
        default=None,
        description="fmv1: local t5-small tokenizer directory; fmv2: local roberta-base directory "
        "(config + tokenizer); nothing is downloaded",
    )
    output_scale: float | list[float] | None = Field(
        default=None,
        description="trained predictors: divisor(s) of the raw outputs onto the common scale; None: the "
        "predictor's documented default",
    )
    batch_size: int = Field(default=256, gt=0)
    backend: Literal["auto", "ray", "local"] = Field(
        default="auto",
        description="auto: in this process below AUTO_LOCAL_ROWS rows (Ray Data's actors take longer to "
        "start than a small set takes to featurize), else Ray Data",
    )
    workers: int = Field(default=2, gt=0)

    def runs_locally(self, rows: int) -> bool:
        return self.backend == "local" or (self.backend == "auto" and rows < AUTO_LOCAL_ROWS)

    @model_validator(mode="after")
    def _paths_fit_the_predictor(self) -> GazeSpec:
        needs = {
            "transformer": ("path",),
            "fmv1": ("path", "base"),
            "fmv2": ("path", "base"),
            "recorded": ("path",),
        }
        allowed = needs.get(self.predictor, ())
        missing = [name for name in allowed if not getattr(self, name)]
        if missing:
            raise ValueError(f"gaze.predictor={self.predictor} needs gaze.{' and gaze.'.join(missing)}")
        unused = [name for name in ("path", "base") if getattr(self, name) and name not in allowed]
        if self.output_scale is not None and self.predictor not in ("transformer", "fmv1", "fmv2"):
            unused.append("output_scale")
        if unused:
            raise ValueError(f"gaze.predictor={self.predictor} takes no gaze.{' or gaze.'.join(unused)}")
        return self

    def predictor_kwargs(self) -> dict[str, Any]:
        """What ``GazeFeaturizer``/``build_predictor`` take: the predictor, its paths and output scale."""
        return {
            "predictor": self.predictor,
            "path": self.path,
            "base": self.base,
            "output_scale": self.output_scale,
        }


class ImplicitSpec(BaseModel):
    """Session logs whose behaviour features fill the ``implicit`` column (``gazerm.features.implicit``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    sessions: list[str] = Field(min_length=1)
    on_missing: OnMissing = "null"

    def files(self) -> list[Path]:
        """Every session log, each pattern's matches sorted; a pattern matching no file is an error."""
        files = []
        for pattern in self.sessions:
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise DataError(pattern, None, None, "no session log file matches this path or pattern")
            files += [Path(match) for match in matches]
        return files


class PrepareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    sources: list[SourceSpec] = Field(min_length=1)
    output_dir: OutputDir
    rows_per_shard: int = Field(default=5000, gt=0)
    splits: dict[str, float] = Field(
        default_factory=lambda: {"train": 0.9, "validation": 0.05, "test": 0.05},
        description="fractions of the rows of the sources without assign_to; they sum to 1",
    )
    seed: int = 0
    split_method: SplitMethod = Field(
        default="hash",
        description="hash: each prompt's split from a hash of the seed and the prompt, so no prompt is "
        "in two splits; shuffle: a seeded permutation of the rows cut as datasets' train_test_split "
        "does (the reference code's split; it splits rows, not prompts); group_kfold: fold `fold` of "
        "`folds` folds of whole groups is the test split, so no group is in two splits",
    )
    group: GroupColumn = Field(
        default="group", description="group_kfold: the column that groups rows (group: who gave the labels)"
    )
    folds: int | None = Field(default=None, ge=2, description="group_kfold: how many folds")
    fold: int | None = Field(default=None, ge=0, description="group_kfold: the fold that is the test split")
    pinned_overlap: PinnedOverlap = Field(
        default="drop",
        description="an unpinned row whose prompt a pinned source puts in another split: drop (left "
        "out, counted) or keep (in both splits, counted; what the reference code does)",
    )
    on_error: OnError = "raise"
    filter: LengthFilter = Field(default_factory=LengthFilter)
    gaze: GazeSpec = Field(default_factory=GazeSpec)
    implicit: ImplicitSpec | None = None

    @field_validator("splits")
    @classmethod
    def _fractions_sum_to_one(cls, splits: dict[str, float]) -> dict[str, float]:
        unknown = set(splits) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split names {sorted(unknown)}; use {SPLITS}")
        if any(not 0 <= f <= 1 for f in splits.values()) or abs(sum(splits.values()) - 1.0) > 1e-6:
            # `not 0 <= f` also refuses NaN, which compares false with everything and would pass `f < 0`
            raise ValueError(f"split fractions must be between 0 and 1 and sum to 1, got {splits}")
        return splits

    @model_validator(mode="after")
    def _folds_fit_the_method(self) -> PrepareConfig:
        if self.split_method != "group_kfold":
            # by value, not model_fields_set: load_config dumps defaults back in before applying overrides
            defaults = {"group": "group", "folds": None, "fold": None}
            given = [name for name, default in defaults.items() if getattr(self, name) != default]
            if given:
                raise ValueError(f"{', '.join(given)}: only split_method=group_kfold takes them")
            return self
        if self.folds is None or self.fold is None or self.fold >= self.folds:
            raise ValueError("split_method=group_kfold needs folds (at least 2) and fold (0 to folds - 1)")
        if self.splits.get("test"):
            raise ValueError(
                "split_method=group_kfold: the test split is fold `fold`; give splits only the train and "
                "validation fractions of the other folds' rows (e.g. {train: 0.9, validation: 0.1})"
            )
        pinned = [source.describe() for source in self.sources if source.assign_to]
        if pinned:
            raise ValueError(f"split_method=group_kfold splits every row by group; {pinned} pin assign_to")
        return self

    @property
    def grouped_by(self) -> str | None:
        """The column every row needs a value in (group_kfold), else None."""
        return self.group if self.split_method == "group_kfold" else None


def prepare(config: PrepareConfig, force: bool = False) -> Manifest:
    """Write the dataset; one made from the same config and input files is verified and reused (resumable).

    A rebuild removes what the previous manifest lists (its shards, quarantine file and the manifest) and
    nothing else, after the sources have loaded. An ``output_dir`` that holds ``train/``, ``validation/``,
    ``test/`` or ``quarantine.jsonl`` but no manifest was not written by ``prepare``: it is refused, since
    the new shards would mix with its files. ``force`` rebuilds a dataset that matches the config, and
    writes into such a directory (deleting none of its files; shards of the same name are overwritten).
    """
    root = Path(config.output_dir)
    problem = output_dir_problem(str(root))
    if problem:
        raise ConfigError(f"output_dir: {problem}")
    reusable = _existing(root, config)
    if reusable and not force:
        log.info("%s already holds this dataset (shards verified); reusing it", root)
        return reusable
    _refuse_foreign(root, force)

    examples, pins, quarantined, source_stats = _load_all(config)
    table = examples_to_table(examples)
    names, splitting = _assign(table, pins, config)  # before features: dropped rows are not featurized
    kept = [i for i, name in enumerate(names) if name is not None]
    if len(kept) < len(names):
        table, names = table.take(kept), [names[i] for i in kept]
    implicit = source_implicit(table, source_stats, sessions=config.implicit is not None)
    if config.implicit:  # before gaze: cheap, on the driver, and on_missing='raise' fails early
        table, implicit = add_implicit(table, config.implicit.files(), config.implicit.on_missing)
    recorded = None
    if config.gaze.predictor == "source":
        table = keep_source_gaze(table)
    elif config.gaze.predictor == "recorded":
        table, recorded = add_recorded_gaze(clear_source_gaze(table), config.gaze.path)
    else:
        table = _add_gaze(clear_source_gaze(table), config.gaze)
    if table.num_rows != len(names):
        raise RuntimeError(f"gaze features returned {table.num_rows} rows for {len(names)}")
    written = [*config.splits, *(name for name in SPLITS if name in set(names) - set(config.splits))]
    splits = partition(table, names, written)
    root.mkdir(parents=True, exist_ok=True)
    interrupted = (root / WRITING_NAME).exists()
    (root / WRITING_NAME).write_text("gazerm prepare is writing this dataset; its manifest comes last\n")
    _clear(root, interrupted)
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        splits={name: write_split(part, root, name, config.rows_per_shard) for name, part in splits.items()},
        sources=source_stats,
        quarantine=_write_quarantine(root, quarantined),
        gaze_source=None if config.gaze.predictor == "none" else table.column("gaze_source")[0].as_py(),
        config=config.model_dump(mode="json"),
        implicit=implicit,
        recorded_gaze=recorded,
        splitting=splitting,
    )
    write_text_atomic(root / MANIFEST_NAME, manifest.to_json())
    (root / WRITING_NAME).unlink()
    log.info("wrote %s: %s", root, {name: manifest.rows(name) for name in manifest.splits})
    return manifest


def _existing(root: Path, config: PrepareConfig) -> Manifest | None:
    if not (root / MANIFEST_NAME).exists():
        return None
    try:
        manifest = verify(root)
    except (ValueError, FileNotFoundError) as exc:
        log.warning("rebuilding %s: %s", root, exc)
        return None
    if not _same_config(manifest.config, config):
        return None
    if [source.get("sha256") for source in manifest.sources] != _input_hashes(config):
        log.info("rebuilding %s: an input file changed", root)
        return None
    if config.implicit and manifest.implicit["sessions"] != session_hashes(config.implicit.files()):
        log.info("rebuilding %s: a session log changed", root)
        return None
    if manifest.recorded_gaze and manifest.recorded_gaze["sha256"] != file_sha256(config.gaze.path):
        log.info("rebuilding %s: the recorded fixations changed", root)
        return None
    return manifest


def _same_config(recorded: dict[str, Any], config: PrepareConfig) -> bool:
    """Whether a manifest's config is this one, read as a config: a setting added since the manifest was
    written then takes its default instead of forcing a rebuild."""
    try:
        return PrepareConfig.model_validate(recorded) == config
    except ValidationError:
        return False


def _input_hashes(config: PrepareConfig) -> list[str | None]:
    """The sha256 of each local input file or directory (a release read whole, such as IFLLM's): the
    config alone does not show that an input was rewritten."""
    return [_input_hash(Path(spec.path)) if spec.path else None for spec in config.sources]


def _input_hash(path: Path) -> str | None:
    if path.is_file():
        return file_sha256(path)
    if path.is_dir():
        return tree_sha256(path)
    return None


def _refuse_foreign(root: Path, force: bool) -> None:
    """Refuse an ``output_dir`` holding what ``prepare`` writes (split folders, a quarantine file) without
    the manifest that says ``prepare`` wrote them, unless ``force``; unrelated files are no obstacle, and
    neither is what a ``prepare`` cut short left (its marker says it wrote them)."""
    if force or (root / MANIFEST_NAME).exists() or (root / WRITING_NAME).exists():
        return
    found = [name for name in (*SPLITS, QUARANTINE_NAME) if (root / name).exists()]
    if found:
        raise ExistsError(
            f"output_dir {root} holds {', '.join(found)} but no {MANIFEST_NAME}: gazerm prepare did not "
            "write them. Choose another output_dir, move them, or rerun with --force (prepare(config, "
            "force=True)) to write beside them: nothing is deleted, but files named as prepare names its "
            "own (SPLIT/part-NNNNN.parquet, quarantine.jsonl) are overwritten"
        )


def _clear(root: Path, interrupted: bool) -> None:
    """Remove what the previous manifest lists (shards, quarantine file, the manifest), and only that:
    ``output_dir`` may hold other files, even inside the split folders, which are removed once empty. A
    manifest that cannot be read is removed alone (the new shards overwrite those of the same names).
    After a ``prepare`` cut short (``interrupted``: no manifest lists what it wrote), every file named as
    prepare names its own goes."""
    manifest = root / MANIFEST_NAME
    for relative in [*_written_by(root), *(_named_as_own(root) if interrupted else [])]:
        path = root / relative
        if path.is_file():
            path.unlink()
    for name in SPLITS:
        with contextlib.suppress(OSError):  # absent, or holding files prepare did not write
            (root / name).rmdir()
    if manifest.is_file():
        manifest.unlink()
    root.mkdir(parents=True, exist_ok=True)


_SHARD_FILE = re.compile(rf"({'|'.join(SPLITS)})/part-\d{{5}}\.parquet")


def _named_as_own(root: Path) -> list[str]:
    """The files below ``root`` named as ``prepare`` names its own (``SPLIT/part-NNNNN.parquet``, the
    quarantine file), relative to it."""
    files = [path.relative_to(root).as_posix() for path in root.glob("*/part-*.parquet")]
    return [f for f in [*files, QUARANTINE_NAME] if _SHARD_FILE.fullmatch(f) or f == QUARANTINE_NAME]


def _written_by(root: Path) -> list[str]:
    """The files (relative to ``root``) the manifest in ``root`` lists: its shards and quarantine file. Only
    names of the form prepare writes count, so a tampered manifest cannot point outside ``root``."""
    try:
        data = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
        files = [shard["file"] for shards in data["splits"].values() for shard in shards]
        files.append(data["quarantine"].get("file"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        log.warning("%s: the old manifest is unreadable (%s); only it is removed", root, exc)
        return []
    return [f for f in files if isinstance(f, str) and (_SHARD_FILE.fullmatch(f) or f == QUARANTINE_NAME)]


def _load_all(
    config: PrepareConfig,
) -> tuple[list[PreferenceExample], list[str | None], list[dict[str, Any]], list[dict[str, Any]]]:
    """Every example of every source with the split its source pins it to (None: split by fractions);
    bad rows and unreadable files raise or are quarantined, and rows that state no preference (ties) or
    are over ``filter.max_pair_chars`` (``too_long``, left out before any split) are counted in each
    source's stats."""
    examples: list[PreferenceExample] = []
    pins: list[str | None] = []
    quarantined: list[dict[str, Any]] = []
    stats = []
    too_long = config.filter.too_long()
    for spec, sha256 in zip(config.sources, _input_hashes(config), strict=True):
        loaded, ties, bad, source_report = _load_source(spec, config.on_error, config.grouped_by)
        kept = [example for example in loaded if not too_long(example)] if too_long else loaded
        dropped, loaded = len(loaded) - len(kept), kept
        report = log.warning if bad or dropped else log.info  # left-out rows must not pass unnoticed
        report(
            "%s: %d examples, %d ties, %d quarantined, %d over filter.max_pair_chars",
            spec.describe(),
            len(loaded),
            ties,
            len(bad),
            dropped,
        )
        examples += loaded
        pins += [spec.assign_to] * len(loaded)
        quarantined += bad
        stats.append(
            {
                "format": spec.format,
                "input": spec.describe(),
                "examples": len(loaded),
                "ties": ties,
                "quarantined": len(bad),
                "too_long": dropped,
                "sha256": sha256,
                "assign_to": spec.assign_to,
                **(_report_stats(source_report) if source_report else {}),
            }
        )
    if not examples:
        raise DataError(_inputs(config), None, None, "no usable examples")
    return examples, pins, quarantined, stats


def _assign(
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
    free_names = _split_free(table, free, keys, config)
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


def _inputs(config: PrepareConfig) -> str:
    return ", ".join(spec.describe() for spec in config.sources)


def _split_free(table: pa.Table, free: list[int], keys: list[str], config: PrepareConfig) -> list[str]:
    """The split of each unpinned row: by prompt (hash), row (shuffle) or group (group_kfold)."""
    if config.split_method != "group_kfold":
        return split_names([keys[i] for i in free], config.seed, config.splits, config.split_method)
    column = table.column(config.group).to_pylist()
    groups, validation = [column[i] for i in free], config.splits.get("validation", 0.0)
    try:
        return group_fold_splits(groups, config.seed, config.folds, config.fold, validation)
    except ValueError as error:
        raise DataError(_inputs(config), None, config.group, str(error)) from None


def _fold_record(groups: list[str], names: list[str | None], config: PrepareConfig) -> dict[str, Any]:
    """What the manifest says of a group_kfold split: the column, folds, fold and groups per split."""
    in_split: defaultdict[str, set[str]] = defaultdict(set)
    for group, name in zip(groups, names, strict=True):
        in_split[name].add(group)
    counts = {name: len(in_split[name]) for name in SPLITS if name in in_split}
    return {"group": config.group, "folds": config.folds, "fold": config.fold, "groups": counts}


def _report_stats(report: SourceReport) -> dict[str, Any]:
    """What a source's own report adds to its stats: its counts, and its implicit feature names."""
    names = report.implicit_feature_names
    return {"report": report.counts, "implicit_feature_names": None if names is None else list(names)}


def _load_source(
    spec: SourceSpec, on_error: OnError, grouped_by: str | None
) -> tuple[list[PreferenceExample], int, list[dict[str, Any]], SourceReport | None]:
    """One source's examples, its number of ties (rows whose responses are equally good: no example,
    no error) and its quarantine records. A file that cannot be parsed at all is raised by the reader
    (no record of it is usable), so it is caught here to quarantine it as one record. With
    ``grouped_by``, an example without a value in that column is an error like any bad row. A format
    that reports on the whole source (``SourceReport``) gives that report too."""
    examples: list[PreferenceExample] = []
    report = None
    ties = 0
    quarantined: list[dict[str, Any]] = []
    items = iter_source(
        spec.format,
        spec.path,
        hub_name=spec.hub_name,
        split=spec.split,
        data_files=spec.data_files,
        limit=spec.limit,
        **spec.options,
    )
    try:
        for loaded in tqdm(items, desc=f"load {spec.describe()}", unit=" rows", mininterval=2.0):
            item = _without_group(loaded, grouped_by) or loaded
            if isinstance(item, PreferenceExample):
                examples.append(item)
            elif isinstance(item, Tie):
                ties += 1
            elif isinstance(item, SourceReport):
                report = item
            elif on_error == "raise":
                raise item
            else:
                quarantined.append(_quarantine_record(spec, item))
    except UnreadableFileError as error:
        if on_error == "raise":
            raise
        # Found part-way (a corrupt Parquet page, a CSV that stops parsing): no record of the file is
        # trusted, so what it gave before is dropped with it; the one record stands for the file.
        if examples or ties or quarantined:
            log.warning(
                "%s: unreadable part-way; its %d examples read so far are dropped",
                spec.describe(),
                len(examples),
            )
        examples, ties, quarantined, report = [], 0, [], None
        quarantined.append(_quarantine_record(spec, error))
    return examples, ties, quarantined, report


def _without_group(item: Any, grouped_by: str | None) -> DataError | None:
    """The error for an example that has no value in the column its split is decided by."""
    if grouped_by and isinstance(item, PreferenceExample) and not getattr(item, grouped_by):
        return DataError(
            item.source_file, item.source_row, grouped_by, "empty: split_method=group_kfold splits rows by it"
        )
    return None


def _quarantine_record(spec: SourceSpec, error: DataError) -> dict[str, Any]:
    return {
        "source": spec.describe(),
        **error.to_record(),
        "whole_file": isinstance(error, UnreadableFileError),
    }


def _add_gaze(table: pa.Table, gaze: GazeSpec) -> pa.Table:
    """Compute per-word gaze features once: in this process, or in parallel with Ray Data
    (``GazeSpec.runs_locally``)."""
    if gaze.predictor == "none":
        return table
    from gazerm.features.featurize import GazeFeaturizer

    kwargs = gaze.predictor_kwargs()
    if gaze.runs_locally(table.num_rows):
        featurize = GazeFeaturizer(**kwargs)
        batches = tqdm(
            _batches(table, gaze.batch_size), desc="gaze features", unit=" batches", mininterval=2.0
        )
        return pa.concat_tables([featurize(batch) for batch in batches]).cast(PREFERENCE_SCHEMA)

    import ray.data

    init_ray()
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    dataset = ray.data.from_arrow(_blocks(table, gaze)).map_batches(
        GazeFeaturizer,
        fn_constructor_kwargs=kwargs,
        batch_size=gaze.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=gaze.workers),
        max_restarts=0,  # a lost featurizer fails prepare (rerun it); no restart from spilled arguments
    )
    featurized = []
    with tqdm(total=table.num_rows, desc="gaze features", unit=" rows", mininterval=2.0) as progress:
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):  # blocks, in order
            featurized.append(batch)
            progress.update(batch.num_rows)
    return pa.concat_tables(featurized).cast(PREFERENCE_SCHEMA)


def _blocks(table: pa.Table, gaze: GazeSpec) -> list[pa.Table]:
    """About ``workers * 2`` blocks of whole batches: Ray Data hands each featurizer actor whole blocks,
    so a table left as one block would keep every actor but one idle."""
    batches = math.ceil(table.num_rows / gaze.batch_size)
    return _batches(table, gaze.batch_size * max(1, math.ceil(batches / (gaze.workers * 2))))


def _batches(table: pa.Table, size: int) -> list[pa.Table]:
    return [table.slice(start, size) for start in range(0, table.num_rows, size)]


def _write_quarantine(root: Path, quarantined: list[dict[str, Any]]) -> dict[str, Any]:
    if not quarantined:
        return {"count": 0}
    # backslashreplace: an error message quoting input must not fail to be written (a lone surrogate)
    with (root / QUARANTINE_NAME).open("w", encoding="utf-8", errors="backslashreplace") as handle:
        for record in quarantined:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return {
        "count": len(quarantined),
        "file": QUARANTINE_NAME,
        "by_source": dict(Counter(r["source"] for r in quarantined)),
        "by_field": dict(Counter(str(r["field"]) for r in quarantined)),
        "whole_files": sum(r["whole_file"] for r in quarantined),
    }
