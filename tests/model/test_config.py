from __future__ import annotations

import pytest
from pydantic import ValidationError

from gazerm.config import dump_config, load_config
from gazerm.model.config import LossConfig, ModelConfig


def test_defaults_are_tiny_llama_with_gaze_concat_and_lora():
    config = ModelConfig()
    assert (config.backbone, config.fusion, config.is_tiny) == ("tiny-llama", "concat", True)
    assert config.lora is not None and config.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert not ModelConfig(backbone="mistralai/Mistral-7B-v0.1").is_tiny


@pytest.mark.parametrize("flags", [[1, 1, 1, 1], [1, 0, 2, 0, 0], [1, 1, 1, 1, 1, 1]])
def test_features_used_must_be_five_binary_flags(flags):
    with pytest.raises(ValidationError, match="features_used"):
        ModelConfig(features_used=flags)


def test_fusion_needs_a_used_feature_but_text_only_does_not():
    with pytest.raises(ValidationError, match="at least one feature"):
        ModelConfig(fusion="add", features_used=[0, 0, 0, 0, 0])
    assert ModelConfig(fusion="none", features_used=[0, 0, 0, 0, 0]).fusion == "none"


def test_the_gaze_layout_defaults_to_gazerms_and_the_reference_gazes_the_prompt():
    config = ModelConfig()
    assert (config.gaze_layout, config.positions, config.gazes_prompt, config.reads_padding) == (
        "gazerm",
        "attended",
        False,
        False,
    )
    assert ModelConfig(gaze_layout="reference").gazes_prompt
    assert not ModelConfig(gaze_layout="reference", fusion="none").gazes_prompt
    assert ModelConfig(positions="padded").reads_padding and ModelConfig(pooling="last_slot").reads_padding


@pytest.mark.parametrize(
    "bad",
    [
        {"typo": 1},
        {"fp_dropout": (0.1, 1.0)},
        {"num_outputs": 0},
        {"tiny": {"num_heads": 3}},
        {"gaze_layout": "paper"},
        {"positions": "absolute"},
    ],
)
def test_invalid_model_configs_are_rejected(bad):
    with pytest.raises(ValidationError):
        ModelConfig(**bad)


def test_loss_config_validation():
    assert LossConfig().kind == "pairwise"
    with pytest.raises(ValidationError):
        LossConfig(lm_loss_coeff=-0.1)
    assert LossConfig(kind="listwise").kind == "listwise"
    with pytest.raises(ValidationError, match="pairwise losses"):
        LossConfig(kind="regression", lm_loss_coeff=0.5)
    with pytest.raises(ValidationError):
        LossConfig(kind="ranking")


def test_yaml_round_trip_keeps_every_field(tmp_path):
    config = ModelConfig(
        backbone="tiny-bert", lora=None, fp_dropout=(0.2, 0.4), features_used=[0, 1, 0, 1, 0]
    )
    path = tmp_path / "model.yaml"
    path.write_text(dump_config(config))
    assert load_config(ModelConfig, path) == config
