"""Search-space files: parsing, the feature-subset shorthand, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray import tune

from gazerm.config import load_config
from gazerm.errors import ConfigError
from gazerm.train.config import RunConfig, TrainJobConfig
from gazerm.tune.search import check_values, derive_concurrency
from gazerm.tune.space import FEATURES_PATH, SearchSpace, all_feature_masks
from gazerm.tune.trial import trial_config

SPACES = Path(__file__).resolve().parents[2] / "tune_spaces"


def _space(**fields) -> SearchSpace:
    return load_config(SearchSpace, {"name": "test", **fields})


def test_all_feature_subsets_are_the_31_non_empty_masks():
    masks = all_feature_masks()
    assert len(masks) == 31 == len({tuple(mask) for mask in masks})
    assert all(len(mask) == 5 and any(mask) and set(mask) <= {0, 1} for mask in masks)
    assert masks[0] == [1, 0, 0, 0, 0] and masks[-1] == [1, 1, 1, 1, 1]

    grid = _space(feature_subsets="all").param_space()[FEATURES_PATH]
    assert grid == {"grid_search": masks}


def test_loguniform_keeps_its_bounds_and_samples_inside_them():
    space = _space(params={"optim.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-3}})
    lr = space.param_space()["optim.lr"]
    assert isinstance(lr, tune.search.sample.Float)
    assert (lr.lower, lr.upper) == (1e-5, 1e-3)
    samples = lr.sample(size=200, random_state=0)
    assert all(1e-5 <= value <= 1e-3 for value in samples)
    assert sum(value < 1e-4 for value in samples) > 60  # log scale: the lower decade gets half


def test_shipped_spaces_parse_and_tiny_makes_four_trials():
    tiny = load_config(SearchSpace, SPACES / "tiny.yaml")
    paper = load_config(SearchSpace, SPACES / "paper.yaml")

    grids = [d.values for d in tiny.distributions().values() if d.type == "grid"]
    assert tiny.num_samples * len(grids[0]) * len(grids[1]) == 4
    assert paper.distributions()[FEATURES_PATH].values == all_feature_masks()
    assert set(paper.distributions()) == {"optim.lr", "model.fp_dropout", "model.fusion", FEATURES_PATH}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"params": {"optim.lrr": {"type": "choice", "values": [1]}}},
            "params: .*'optim.lrr' is not a field",
        ),
        ({"fixed": {"model.lora.rank": 4}}, "fixed: .*'model.lora.rank' is not a field"),
        (
            {"params": {"data.prepare.splits.train": {"type": "choice", "values": [0.7, 0.8]}}},
            "params: .*'data.prepare.splits.train' is a key inside the mapping 'data.prepare.splits': "
            "search over whole data.prepare.splits values",
        ),
        (
            {"params": {"optim.lr": {"type": "loguniform", "low": 0, "high": 1e-3}}},
            r"params.optim.lr.loguniform.low: Input should be greater than 0",
        ),
        (
            {"params": {"optim.lr": {"type": "uniform", "low": 0.3, "high": 0.1}}},
            r"params.optim.lr.uniform: .*low \(0.3\) must be below high \(0.1\)",
        ),
        ({"params": {"optim.lr": {"type": "normal"}}}, "params.optim.lr: Input tag 'normal'"),
        ({"params": {"model.fusion": {"type": "grid", "values": []}}}, "params.model.fusion.grid.values"),
        ({"feature_subsets": [[1, 0, 1]]}, r"feature_subsets: .*\[1, 0, 1\]: a mask is 5 flags"),
        ({"feature_subsets": [[0, 0, 0, 0, 0]]}, "feature_subsets: .*at least one 1"),
        ({"feature_subsets": "some"}, "feature_subsets"),
        (
            {
                "feature_subsets": "all",
                "params": {FEATURES_PATH: {"type": "choice", "values": [[1, 1, 1, 1, 1]]}},
            },
            "feature_subsets and params.model.features_used",
        ),
        ({"params": {}}, "nothing to search"),
        (
            {"feature_subsets": "all", "asha": {"grace_period": 10, "max_t": 5}},
            r"asha: .*grace_period \(10\) exceeds max_t \(5\)",
        ),
        (
            {"feature_subsets": "all", "num_samples": 0},
            "num_samples: Input should be greater than or equal to 1",
        ),
    ],
)
def test_invalid_spaces_name_the_field(fields: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        _space(**fields)


def test_trial_config_applies_fixed_then_sampled_values():
    fixed = {"run.max_steps": 8, "model.fusion": "add"}
    sampled = {"optim.lr": 1e-05, "model.fp_dropout": [0.0, 0.1], "model.fusion": "concat", "model.lora.r": 4}

    config = trial_config(TrainJobConfig(), fixed, sampled, "/tmp/trial", "s-t1")

    assert config.optim.lr == 1e-05 and isinstance(config.optim.lr, float)
    assert config.model.fp_dropout == (0.0, 0.1) and config.model.fusion == "concat"
    assert (config.model.lora.r, config.run.max_steps) == (4, 8)
    assert (config.output_dir, config.tracking.run_name) == ("/tmp/trial", "s-t1")
    with pytest.raises(ConfigError, match=r"model\.lora\.r"):
        trial_config(TrainJobConfig(), {}, {"model.lora.r": 0}, "/tmp/t", "t")


@pytest.mark.parametrize(
    ("run", "cluster", "expected"),
    [
        (RunConfig(num_workers=2), {"CPU": 4.0}, 1),  # 2 CPUs stay with Ray Data
        (RunConfig(num_workers=2), {"CPU": 16.0}, 7),
        (RunConfig(num_workers=4, cpus_per_worker=2), {"CPU": 64.0}, 7),
        (RunConfig(num_workers=8, use_gpu=True), {"CPU": 128.0, "GPU": 16.0}, 2),
        (RunConfig(num_workers=8, use_gpu=True), {"CPU": 8.0, "GPU": 4.0}, 1),  # never below one
    ],
)
def test_concurrency_follows_cluster_resources(run: RunConfig, cluster: dict, expected: int):
    assert derive_concurrency(run, cluster) == expected


def test_a_feature_ablation_over_fmv1_gaze_is_refused_before_any_trial():
    """fmv1 predicts TRT only: a search over feature subsets on its data would fail trial after trial."""
    base = TrainJobConfig()
    with pytest.raises(ConfigError, match=r"tries model\.features_used=\[1, 0, 0, 0, 0\].*fmv1"):
        check_values(base, {}, _space(feature_subsets="all"), "fmv1")
    check_values(base, {}, _space(feature_subsets=[[0, 0, 0, 1, 0]]), "fmv1")  # TRT alone: fine
    check_values(base, {}, _space(feature_subsets="all"), "reading_model")
