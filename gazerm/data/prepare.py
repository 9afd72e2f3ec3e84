"""``gazerm prepare``: sources → validated examples → gaze features → split Parquet shards + manifest."""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm import tqdm

from gazerm.data.errors import DataError
from gazerm.data.schema import PREFERENCE_SCHEMA, PreferenceExample, examples_to_table
from gazerm.data.shards import MANIFEST_NAME, SPLITS, Manifest, assign_splits, verify, write_split
from gazerm.data.sources import iter_source
from gazerm.runtime import init_ray

log = logging.getLogger(__name__)

QUARANTINE_NAME = "quarantine.jsonl"


class SourceSpec(BaseModel):
    """One input: a registered format read from a local ``path`` or, without one, from the hub."""

    model_config = ConfigDict(extra="forbid")

    format: str
    path: str | None = None
    hub_name: str | None = None
    split: str = "train"
    data_files: str | list[str] | None = None
    limit: int | None = Field(default=None, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)

    def describe(self) -> str:
        return self.path or f"{self.hub_name or self.format}[{self.split}]"


class GazeSpec(BaseModel):
    """Which gaze predictor fills the ``gaze`` column; ``none`` leaves it empty (text-only models)."""

    model_config = ConfigDict(extra="forbid")

    predictor: Literal["reading_model", "transformer", "none"] = "reading_model"
    path: str | None = None
    batch_size: int = Field(default=256, gt=0)
    backend: Literal["ray", "local"] = "ray"
    workers: int = Field(default=2, gt=0)


class PrepareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[SourceSpec] = Field(min_length=1)
    output_dir: str
    rows_per_shard: int = Field(default=5000, gt=0)
    splits: dict[str, float] = Field(default_factory=lambda: {"train": 0.9, "validation": 0.05, "test": 0.05})
    seed: int = 0
    on_error: Literal["raise", "quarantine"] = "raise"
    gaze: GazeSpec = Field(default_factory=GazeSpec)

    @field_validator("splits")
    @classmethod
    def _fractions_sum_to_one(cls, splits: dict[str, float]) -> dict[str, float]:
        unknown = set(splits) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split names {sorted(unknown)}; use {SPLITS}")
        if any(f < 0 for f in splits.values()) or abs(sum(splits.values()) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must be non-negative and sum to 1, got {splits}")
        return splits


def prepare(config: PrepareConfig, force: bool = False) -> Manifest:
    """Write the dataset; an existing one made from the same config is verified and reused (resumable)."""
    root = Path(config.output_dir)
    reusable = _existing(root, config)
    if reusable and not force:
        log.info("%s already holds this dataset (shards verified); reusing it", root)
        return reusable
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)

    examples, quarantined, source_stats = _load_all(config)
    table = examples_to_table(examples)
    table = _add_gaze(table, config.gaze)
    splits = assign_splits(table, config.seed, config.splits)
    manifest = Manifest(
        schema_version=int(PREFERENCE_SCHEMA.metadata[b"gazerm.schema_version"]),
        splits={name: write_split(part, root, name, config.rows_per_shard) for name, part in splits.items()},
        sources=source_stats,
        quarantine=_write_quarantine(root, quarantined),
        gaze_source=None if config.gaze.predictor == "none" else table.column("gaze_source")[0].as_py(),
        config=config.model_dump(mode="json"),
    )
    (root / MANIFEST_NAME).write_text(manifest.to_json())
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
    return manifest if manifest.config == config.model_dump(mode="json") else None


def _load_all(
    config: PrepareConfig,
) -> tuple[list[PreferenceExample], list[dict[str, Any]], list[dict[str, Any]]]:
    """Every example of every source; bad rows raise or, with on_error=quarantine, are collected."""
    examples: list[PreferenceExample] = []
    quarantined: list[dict[str, Any]] = []
    stats = []
    for spec in config.sources:
        loaded = errors = 0
        items = iter_source(
            spec.format,
            spec.path,
            hub_name=spec.hub_name,
            split=spec.split,
            data_files=spec.data_files,
            limit=spec.limit,
            **spec.options,
        )
        for item in tqdm(items, desc=f"load {spec.describe()}", unit=" rows", mininterval=2.0):
            if isinstance(item, DataError):
                if config.on_error == "raise":
                    raise item
                quarantined.append({"source": spec.describe(), **item.to_record()})
                errors += 1
            else:
                examples.append(item)
                loaded += 1
        log.info("%s: %d examples, %d bad rows", spec.describe(), loaded, errors)
        stats.append(
            {"format": spec.format, "input": spec.describe(), "examples": loaded, "quarantined": errors}
        )
    if not examples:
        raise DataError(", ".join(s.describe() for s in config.sources), None, None, "no usable examples")
    return examples, quarantined, stats


def _add_gaze(table: pa.Table, gaze: GazeSpec) -> pa.Table:
    """Compute per-word gaze features once, in parallel with Ray Data when ``backend='ray'``."""
    if gaze.predictor == "none":
        return table
    from gazerm.features.featurize import GazeFeaturizer

    kwargs = {"predictor": gaze.predictor, "path": gaze.path}
    if gaze.backend == "local":
        featurize = GazeFeaturizer(**kwargs)
        parts = [featurize(batch) for batch in _batches(table, gaze.batch_size)]
        return pa.concat_tables(parts).cast(PREFERENCE_SCHEMA)

    import ray
    import ray.data

    init_ray()
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    dataset = ray.data.from_arrow(table).map_batches(
        GazeFeaturizer,
        fn_constructor_kwargs=kwargs,
        batch_size=gaze.batch_size,
        batch_format="pyarrow",
        concurrency=gaze.workers,
    )
    return pa.concat_tables(ray.get(dataset.to_arrow_refs())).cast(PREFERENCE_SCHEMA)


def _batches(table: pa.Table, size: int) -> list[pa.Table]:
    return [table.slice(start, size) for start in range(0, table.num_rows, size)]


def _write_quarantine(root: Path, quarantined: list[dict[str, Any]]) -> dict[str, Any]:
    if not quarantined:
        return {"count": 0}
    with (root / QUARANTINE_NAME).open("w", encoding="utf-8") as handle:
        for record in quarantined:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return {
        "count": len(quarantined),
        "file": QUARANTINE_NAME,
        "by_source": dict(Counter(r["source"] for r in quarantined)),
        "by_field": dict(Counter(str(r["field"]) for r in quarantined)),
    }
