"""What ``gazerm prepare`` is told to do: its sources, gaze, implicit features and how rows are split.

Apart from the pipeline (``data.prepare``), so the training job's config (``train.config``) holds a
``prepare`` section without importing the pipeline.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from gazerm.config import OutputDir, StrictConfig
from gazerm.data.errors import DataError
from gazerm.data.length_filter import LengthFilter
from gazerm.data.sources import check_options
from gazerm.features.featurize import GazeBackend

SplitName = Literal["train", "validation", "test"]
SPLITS: tuple[str, ...] = get_args(SplitName)
SplitMethod = Literal["hash", "shuffle", "group_kfold"]
OnMissing = Literal["null", "raise"]  # a response without a session view: a null vector, or an error
OnError = Literal["raise", "quarantine"]
PinnedOverlap = Literal["drop", "keep"]
GroupColumn = Literal["group", "domain"]


class SourceSpec(StrictConfig):
    """One input: a registered format read from a local ``path`` or, without one, from the hub.

    ``split`` is the hub split read; ``assign_to`` pins every row of the source to one split of the
    prepared dataset (e.g. a hub's validation split as the test set), where the fractions of
    ``PrepareConfig.splits`` split the rows of the unpinned sources. ``options`` go to the format's
    parser (e.g. ``pairing``, ``lang``) and are checked against it when the config is read.
    """

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


class GazeSpec(StrictConfig):
    """Which gaze predictor fills the ``gaze`` column; ``none`` leaves it empty (text-only models);
    ``recorded`` reads an eye-tracking study's fixations from ``path`` (``gazerm.data.recorded_join``);
    ``source`` keeps the gaze the source recorded with its examples (IFLLM; ``data.source_behaviour``)."""

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
    clip_negative: bool = Field(
        default=True,
        description="fmv1/fmv2: negative outputs set to 0 (no reading measure is negative); false: passed on "
        "raw as eyetrackpy and the paper's reference code do (with output_scale: 1, its raw values)",
    )
    batch_size: int = Field(default=256, gt=0)
    backend: GazeBackend = Field(
        default="auto",
        description="auto: in this process below AUTO_LOCAL_ROWS rows (Ray Data's actors take longer to "
        "start than a small set takes to featurize), else Ray Data",
    )
    workers: int = Field(default=2, gt=0)

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
        if not self.clip_negative and self.predictor not in ("fmv1", "fmv2"):
            unused.append("clip_negative")
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
            "clip_negative": self.clip_negative,
        }


class ImplicitSpec(StrictConfig):
    """Session logs whose behaviour features fill the ``implicit`` column (``gazerm.features.implicit``)."""

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


class PrepareConfig(StrictConfig):
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

    def inputs(self) -> str:
        """The sources, as an error names them."""
        return ", ".join(spec.describe() for spec in self.sources)

    @property
    def grouped_by(self) -> str | None:
        """The column every row needs a value in (group_kfold), else None."""
        return self.group if self.split_method == "group_kfold" else None
