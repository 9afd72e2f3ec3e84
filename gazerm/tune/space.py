"""Search spaces as YAML: which training-config paths vary, how they are drawn, and how the search runs.

Keys are dotted paths of the training job config (``optim.lr``, ``model.fusion``), so any field the
job has can be searched without code changes; paths are checked against the config model when the
file is read, so a typo fails before any trial starts.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from gazerm.config import StrictConfig, mapping_above, path_problem
from gazerm.features.base import N_FEATURES
from gazerm.train.config import TrainJobConfig
from gazerm.train.metric_names import DEFAULT_METRIC

FEATURES_PATH = "model.features_used"


class _Range(StrictConfig):
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> _Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self

    def values_to_check(self) -> list[Any]:
        """The values worth checking against the config before a search spends anything."""
        return [self.low, self.high]


class LogUniform(_Range):
    """Learning rates and other scales: uniform in log space, so each decade gets equal trials."""

    type: Literal["loguniform"]
    low: float = Field(gt=0)

    def domain(self) -> Any:
        from ray import tune

        return tune.loguniform(self.low, self.high)


class Uniform(_Range):
    type: Literal["uniform"]

    def domain(self) -> Any:
        from ray import tune

        return tune.uniform(self.low, self.high)


class Choice(StrictConfig):
    """One value drawn at random per sample (values may be lists: fp_dropout pairs, feature masks)."""

    type: Literal["choice"]
    values: list[Any] = Field(min_length=1)

    def values_to_check(self) -> list[Any]:
        return self.values

    def domain(self) -> Any:
        from ray import tune

        return tune.choice(self.values)


class Grid(Choice):
    """Every value, each combined with every other grid; the whole grid repeats ``num_samples`` times."""

    type: Literal["grid"]

    def domain(self) -> Any:
        from ray import tune

        return tune.grid_search(self.values)


Subsets = Literal["all"] | list[list[int]] | None
Distribution = Annotated[LogUniform | Uniform | Choice | Grid, Field(discriminator="type")]


class AshaSettings(StrictConfig):
    """Asynchronous successive halving over training steps (the ``step`` every evaluation reports)."""

    grace_period: int = Field(ge=1, description="steps every trial trains before it can be stopped")
    reduction_factor: float = Field(default=2, gt=1)
    max_t: int = Field(ge=1, description="steps after which no trial is compared any more")

    @model_validator(mode="after")
    def _grace_within(self) -> AshaSettings:
        if self.grace_period > self.max_t:
            raise ValueError(f"grace_period ({self.grace_period}) exceeds max_t ({self.max_t})")
        return self


class SearchSpace(StrictConfig):
    """A search: distributions per config path, fixed overrides, and how trials are scheduled.

    ``feature_subsets`` is the paper's feature ablation in one line: ``all`` (the 31 non-empty masks
    over the five gaze features) or a list of masks, searched as a grid so every subset is measured.
    """

    name: str = Field(min_length=1, pattern=r"^[\w.-]+$")
    params: dict[str, Distribution] = Field(default_factory=dict)
    feature_subsets: Subsets = None
    fixed: dict[str, Any] = Field(default_factory=dict, description="overrides every trial shares")
    num_samples: int = Field(default=1, ge=1)
    seed: int = 0
    metric: str = DEFAULT_METRIC
    mode: Literal["max", "min"] = "max"
    asha: AshaSettings | None = None
    max_concurrent_trials: int | None = Field(default=None, ge=1, description="None: from cluster size")
    registered_model: str | None = Field(default=None, description="None: the search's name")
    alias: str = "best"

    @field_validator("params", "fixed")
    @classmethod
    def _known_paths(cls, value: dict[str, Any]) -> dict[str, Any]:
        for path in value:
            check_config_path(path)
        return value

    @field_validator("feature_subsets")
    @classmethod
    def _masks(cls, value: Subsets) -> Subsets:
        if not isinstance(value, list):
            return value
        if not value:
            raise ValueError("list at least one mask, or 'all'")
        for mask in value:
            if len(mask) != N_FEATURES or set(mask) - {0, 1} or not any(mask):
                raise ValueError(f"{mask}: a mask is {N_FEATURES} flags of 0/1 with at least one 1")
        if len({tuple(mask) for mask in value}) != len(value):
            raise ValueError("masks repeat")
        return value

    @model_validator(mode="after")
    def _something_varies(self) -> SearchSpace:
        if self.feature_subsets is not None and FEATURES_PATH in self.params:
            raise ValueError(f"feature_subsets and params.{FEATURES_PATH} both set the same field")
        if not self.params and self.feature_subsets is None:
            raise ValueError("nothing to search: set params or feature_subsets")
        return self

    def distributions(self) -> dict[str, Distribution]:
        """``params`` plus ``feature_subsets`` expanded to a grid over ``model.features_used``."""
        if self.feature_subsets is None:
            return dict(self.params)
        masks = all_feature_masks() if self.feature_subsets == "all" else self.feature_subsets
        return {**self.params, FEATURES_PATH: Grid(type="grid", values=masks)}

    def param_space(self) -> dict[str, Any]:
        """Ray Tune's ``param_space``: one flat entry per config path."""
        return {path: distribution.domain() for path, distribution in self.distributions().items()}


def all_feature_masks() -> list[list[int]]:
    """Every non-empty subset of the gaze features (31 for five), fewest features first."""
    masks = [list(flags) for flags in itertools.product((0, 1), repeat=N_FEATURES) if any(flags)]
    return sorted(masks, key=lambda mask: (sum(mask), [-flag for flag in mask]))


def check_config_path(path: str) -> None:
    """Raise unless ``path`` names a field of the training job config (``model.lora.r``). A key inside a
    dict-valued field is not one: each trial would set that key alone beside the mapping's others (a
    ``data.prepare.splits`` whose fractions then no longer sum to one fails every trial)."""
    if path_problem(TrainJobConfig, path):
        raise ValueError(f"{path!r} is not a field of the training job config")
    mapping = mapping_above(TrainJobConfig, path)
    if mapping:
        raise ValueError(
            f"{path!r} is a key inside the mapping {mapping!r}: search over whole {mapping} values"
        )
