"""Where backbones come from (hub name, directory, GGUF file, packaged alias), attention and LoRA checks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from gazerm.errors import ConfigError
from gazerm.model import backbones
from gazerm.model.attention import CAUSAL_CHUNKED_SDPA, backbone_attention
from gazerm.model.backbones import BackboneSource, PackagedModel, check_attention, resolve_backbone
from gazerm.model.config import LoraSettings, ModelConfig
from gazerm.model.reward_model import build_reward_model
from tests.helpers import SMOLLM2, require_smollm2
from tests.model.conftest import make_batch


def test_hub_names_and_directories_pass_through(tmp_path: Path):
    assert resolve_backbone("meta-llama/Meta-Llama-3-8B") == BackboneSource("meta-llama/Meta-Llama-3-8B")
    assert resolve_backbone(str(tmp_path)) == BackboneSource(str(tmp_path))


class FakeGguf:
    """Stands in for transformers' GGUF loading: counts loads, saves a marker file."""

    loads = 0

    @classmethod
    def from_pretrained(cls, directory, gguf_file):
        cls.loads += 1
        return cls()

    def save_pretrained(self, target):
        (Path(target) / f"{type(self).__name__}.saved").write_text("x")


def test_a_gguf_file_is_dequantised_once_into_a_directory_named_by_its_hash(tmp_path: Path, monkeypatch):
    import transformers

    monkeypatch.setenv("GAZERM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(transformers, "AutoModelForCausalLM", FakeGguf)
    monkeypatch.setattr(transformers, "AutoTokenizer", FakeGguf)
    FakeGguf.loads = 0
    gguf = tmp_path / "model.Q4.gguf"
    gguf.write_bytes(b"GGUF one")
    first = resolve_backbone(str(gguf))
    assert Path(first.path).parent == tmp_path / "cache" / "backbones"
    assert (Path(first.path) / "FakeGguf.saved").is_file() and FakeGguf.loads == 2  # model and tokenizer
    assert resolve_backbone(str(gguf)) == first and FakeGguf.loads == 2  # read back, not dequantised again
    assert [p.name for p in (tmp_path / "cache" / "backbones").iterdir()] == [Path(first.path).name]
    gguf.write_bytes(b"GGUF two")  # another file under the same name: another copy
    assert resolve_backbone(str(gguf)) != first
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_backbone(str(tmp_path / "missing.gguf"))


def test_gguf_without_the_gguf_package_says_what_to_install(tmp_path: Path, monkeypatch):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "gguf" else real(name))
    with pytest.raises(ConfigError, match=r"'gguf' package.*pip install -e '\.\[smollm2\]'"):
        resolve_backbone(str(tmp_path / "m.gguf"))


def test_an_alias_of_a_missing_package_names_the_extra(monkeypatch):
    missing = PackagedModel("no-such-distribution", "x/model.gguf", "smollm2")
    monkeypatch.setitem(backbones.ALIASES, "absent-model", missing)
    with pytest.raises(ConfigError, match=r"'no-such-distribution' package.*pip install -e '\.\[smollm2\]'"):
        resolve_backbone("absent-model")


def test_the_smollm2_alias_resolves_to_the_dequantised_packaged_gguf():
    require_smollm2()
    source = Path(resolve_backbone(SMOLLM2).path)
    assert source.name.startswith("SmolLM2-135M-Instruct.Q4_1-")
    assert (source / "model.safetensors").stat().st_size > 500_000_000  # float32 weights
    assert (source / "tokenizer.json").is_file()


def test_flash_attention_without_flash_attn_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"flash_attention_2.*flash_attn"):
        check_attention("flash_attention_2")
    check_attention("sdpa")  # built into torch: nothing to check


def test_the_attention_implementation_reaches_the_backbone(tokenizers):
    rewards = {}
    for implementation in ("sdpa", "eager"):
        config = ModelConfig(attn_implementation=implementation, fusion="none")
        model = build_reward_model(config, tokenizers["tiny-llama"]).eval()
        assert model.transformer.config._attn_implementation == backbone_attention(implementation)
        batch = make_batch(tokenizers["tiny-llama"])
        with torch.no_grad():
            rewards[implementation] = model(batch["input_ids"], batch["attention_mask"]).rewards
    torch.testing.assert_close(rewards["sdpa"], rewards["eager"], atol=1e-5, rtol=1e-4)


def test_lora_targets_must_name_linear_layers_of_the_backbone(tokenizers):
    config = ModelConfig(lora=LoraSettings(target_modules=["q_proj", "query_key_value"]))
    with pytest.raises(ConfigError, match=r"\['query_key_value'\] name no module.*'q_proj'"):
        build_reward_model(config, tokenizers["tiny-llama"])


@pytest.fixture(scope="module")
def smollm2_reward_model(smollm2_tokenizer):
    """The real SmolLM2 backbone from its GGUF file, with LoRA and GazeConcat (loading takes ~30 s)."""
    config = ModelConfig(backbone=SMOLLM2, fusion="concat")
    return build_reward_model(config, smollm2_tokenizer).eval()


def test_the_gguf_backbone_is_the_pretrained_llama(smollm2_reward_model):
    transformer = smollm2_reward_model.transformer
    assert type(transformer).__name__ == "LlamaModel"
    assert (transformer.config.hidden_size, transformer.config.num_hidden_layers) == (576, 30)
    assert transformer.config._attn_implementation == CAUSAL_CHUNKED_SDPA  # sdpa, in causal chunks
    # Pretrained, not random: embedding rows of a real vocabulary differ in norm far more than N(0, 0.02).
    norms = transformer.get_input_embeddings().weight.norm(dim=1)
    assert norms.std() / norms.mean() > 0.1
    trainable = {name for name, p in smollm2_reward_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or not name.startswith("backbone.") for name in trainable)


def test_the_gguf_reward_model_scores_text_with_gaze(smollm2_reward_model, smollm2_tokenizer):
    batch = make_batch(smollm2_tokenizer)
    with torch.no_grad():
        rewards = smollm2_reward_model(**batch).rewards
    assert rewards.shape == (2,) and torch.isfinite(rewards).all() and rewards[0] != rewards[1]


def test_the_tokenizer_of_the_gguf_backbone_pads_with_eos(smollm2_tokenizer):
    assert smollm2_tokenizer.pad_token == smollm2_tokenizer.eos_token == "<|im_end|>"
