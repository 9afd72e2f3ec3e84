"""Typed overrides: ``with_overrides`` sets dotted paths of a config to values as they are and validates the
result; the command line's ``--set`` strings are parsed once, by ``parse_overrides``."""

from __future__ import annotations

import pytest

from gazerm.config import load_config, parse_overrides, path_problem, with_overrides
from gazerm.errors import ConfigError
from gazerm.train.config import TrainJobConfig


def test_values_are_set_as_typed_and_the_rest_is_kept():
    base = TrainJobConfig()
    config = with_overrides(
        base,
        {
            "optim.lr": 1e-05,
            "model.fp_dropout": (0.0, 0.1),
            "run.seed": 7,
            "data.prepare.gaze.backend": "local",
        },
    )
    assert config.optim.lr == 1e-05 and isinstance(config.optim.lr, float)
    assert (config.model.fp_dropout, config.run.seed) == ((0.0, 0.1), 7)
    assert config.data.prepare.gaze.backend == "local"
    assert config.data.prepare.gaze.predictor == base.data.prepare.gaze.predictor
    assert config.model_copy(update={"optim": base.optim, "run": base.run}).model == config.model
    assert base.run.seed == 0  # the config given is not changed


def test_a_section_that_is_none_starts_from_its_defaults_and_a_mapping_sets_fields_one_by_one():
    config = with_overrides(TrainJobConfig(), {"model.lora": None})
    assert with_overrides(config, {"model.lora.r": 4}).model.lora.r == 4
    nested = with_overrides(TrainJobConfig(), {"run": {"seed": 3}})
    assert nested.run == TrainJobConfig().run.model_copy(update={"seed": 3})
    splits = {"train": 0.5, "validation": 0.5}  # a dict-valued field is replaced, not merged
    assert with_overrides(TrainJobConfig(), {"data.prepare.splits": splits}).data.prepare.splits == splits


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("optim.lrr", "override optim.lrr: OptimConfig has no field 'lrr'"),
        ("nmae", "override nmae: TrainJobConfig has no field 'nmae'"),
        ("run.seed.x", "override run.seed.x: 'run.seed' is not a section"),
    ],
)
def test_an_unknown_path_is_a_config_error_naming_it(path, problem):
    with pytest.raises(ConfigError) as error:
        with_overrides(TrainJobConfig(), {path: 1})
    assert str(error.value) == problem
    assert path_problem(TrainJobConfig, path) == problem.split(": ", 1)[1]


def test_the_result_is_validated_as_a_whole():
    with pytest.raises(ConfigError, match=r"optim\.lr: Input should be greater than 0"):
        with_overrides(TrainJobConfig(), {"optim.lr": -1.0})
    with pytest.raises(ConfigError, match=r"use run\.zero_stage=2"):  # a check across sections
        with_overrides(TrainJobConfig(), {"model.init_from": "runs/general/model", "run.zero_stage": 3})
    with pytest.raises(ConfigError, match=r"run\.seed: Input should be a valid integer"):
        with_overrides(TrainJobConfig(), {"run.seed": "seven"})


def test_command_line_strings_parse_once_into_typed_values():
    parsed = parse_overrides(
        ["optim.lr=1.0e-05", "model.fusion=add", "model.features_used=[0,0,0,1,0]", "x=true"]
    )
    assert parsed == {
        "optim.lr": 1e-05,
        "model.fusion": "add",
        "model.features_used": [0, 0, 0, 1, 0],
        "x": True,
    }
    assert load_config(TrainJobConfig, {}, parse_overrides(["run.seed=4"])).run.seed == 4
    with pytest.raises(ConfigError, match=r"is not of the form key\.path=value"):
        parse_overrides(["run.seed"])
    with pytest.raises(ConfigError, match=r"'run.seed=\[1': the value is not valid YAML"):
        parse_overrides(["run.seed=[1"])


def test_a_repeated_key_is_set_where_and_as_it_was_last_given():
    """Overrides apply in order: a repeated key kept at its first place would be undone by what was given
    between (here ``model.lora=null`` after the last ``model.lora.r``)."""
    parsed = parse_overrides(["run.seed=1", "optim.lr=0.1", "run.seed=2"])
    assert list(parsed.items()) == [("optim.lr", 0.1), ("run.seed", 2)]
    given = parse_overrides(["model.lora.r=4", "model.lora=null", "model.lora.r=8"])
    assert load_config(TrainJobConfig, {}, given).model.lora.r == 8
