"""QLoRA (``model.quantization: nf4``): where it is allowed, the error on a machine without a GPU, the
reference's 4-bit settings, and what it saves in the memory estimate. Loading in 4-bit needs a CUDA GPU:
the device check script runs that part."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from gazerm.config import load_config
from gazerm.errors import ConfigError
from gazerm.model.config import ModelConfig
from gazerm.model.reward_model import quantization_kwargs
from gazerm.train.config import TrainJobConfig
from gazerm.train.memory import estimate_worker_memory
from tests.helpers import SMOLLM2, require_smollm2

QLORA = {"model.quantization": "nf4", "run.use_gpu": True, "model.backbone": SMOLLM2}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model.quantization": "nf4"}, "needs lora and a pretrained"),  # the tiny default backbone
        (QLORA | {"model.lora": None}, "needs lora"),
        (QLORA | {"run.use_gpu": False}, "run.use_gpu=true"),
        (QLORA | {"run.zero_stage": 3}, "ZeRO-3 cannot partition 4-bit weights"),
    ],
)
def test_qlora_is_refused_where_it_cannot_run(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TrainJobConfig, {}, overrides)


def test_without_a_gpu_loading_in_4bit_stops_with_one_clear_line():
    assert not torch.cuda.is_available()  # this machine; a GPU machine runs the device check instead
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        quantization_kwargs(ModelConfig(backbone=SMOLLM2, quantization="nf4"))
    assert quantization_kwargs(ModelConfig(backbone=SMOLLM2)) == {}


def test_the_reference_4bit_settings_on_a_gpu_worker(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: object() if name == "bitsandbytes" else real_find_spec(name)
    )
    kwargs = quantization_kwargs(ModelConfig(backbone=SMOLLM2, quantization="nf4"))
    quantization = kwargs["quantization_config"]
    assert quantization.load_in_4bit and quantization.bnb_4bit_quant_type == "nf4"
    assert quantization.bnb_4bit_compute_dtype == torch.bfloat16
    assert not quantization.bnb_4bit_use_double_quant
    assert kwargs["device_map"] == {"": 3} and kwargs["torch_dtype"] == torch.bfloat16


def test_without_bitsandbytes_the_extra_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "bitsandbytes" else real_find_spec(name)
    )
    with pytest.raises(ConfigError, match=r"\.\[qlora\]"):
        quantization_kwargs(ModelConfig(backbone=SMOLLM2, quantization="nf4"))


def test_nf4_weights_take_about_a_quarter_of_bf16_in_the_estimate():
    require_smollm2()
    bf16 = estimate_worker_memory(load_config(TrainJobConfig, {}, QLORA | {"model.quantization": "none"}))
    nf4 = estimate_worker_memory(load_config(TrainJobConfig, {}, QLORA))
    assert nf4.precision == "nf4" and bf16.precision == "bf16"
    # SmolLM2's tied 28M-parameter embedding stays bf16; its 106M linear weights drop to ~0.56 bytes each
    assert 0.35 < nf4.weights / bf16.weights < 0.5
    assert nf4.activations == bf16.activations and nf4.trainable == bf16.trainable
