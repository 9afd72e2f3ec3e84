"""``gazerm prepare``: sources → validated examples → gaze features → split Parquet shards + manifest."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import ValidationError
from tqdm import tqdm

from gazerm.cache import file_sha256
from gazerm.config import output_dir_problem
from gazerm.data.config import SPLITS, GazeSpec, OnError, PrepareConfig, SourceSpec
from gazerm.data.errors import DataError
from gazerm.data.implicit_join import add_implicit, session_hashes
from gazerm.data.loaders.base import SourceReport, Tie
from gazerm.data.readers import UnreadableFileError
from gazerm.data.recorded_join import add_recorded_gaze
from gazerm.data.schema import PREFERENCE_SCHEMA, SCHEMA_VERSION, PreferenceExample, examples_to_table
from gazerm.data.shards import (
    MANIFEST_NAME,
    Manifest,
    partition,
    split_rows,
    tree_sha256,
    verify,
    write_split,
)
from gazerm.data.source_behaviour import clear_source_gaze, keep_source_gaze, source_implicit
from gazerm.data.sources import iter_source
from gazerm.errors import ConfigError, ExistsError
from gazerm.features.featurize import featurize_table
from gazerm.storage import write_text_atomic

log = logging.getLogger(__name__)

QUARANTINE_NAME = "quarantine.jsonl"
WRITING_NAME = ".prepare-writing"  # from clearing the old dataset until the new manifest is written


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
    names, splitting = split_rows(table, pins, config)  # before features: dropped rows are not featurized
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
        raise DataError(config.inputs(), None, None, "no usable examples")
    return examples, pins, quarantined, stats


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
    """Per-word gaze features, computed once (in this process or with Ray Data: ``featurize_table``)."""
    if gaze.predictor == "none":
        return table
    kwargs = gaze.predictor_kwargs()
    featurized = featurize_table(table, kwargs, gaze.backend, gaze.batch_size, gaze.workers)
    return featurized.cast(PREFERENCE_SCHEMA)


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
