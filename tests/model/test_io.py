from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch

from gazerm.errors import ConfigError, PathNotFoundError
from gazerm.model.inputs import InputSpec
from gazerm.model.io import load_reward_model, save_reward_model
from gazerm.model.manifest import MANIFEST_FILE, required_parts, seal_model_dir
from gazerm.model.reward_model import RewardModel, build_reward_model
from tests.helpers import READING_MODEL_INPUTS, TEXT_ONLY_INPUTS
from tests.model.conftest import make_batch, tiny_config, tokenizer_for


def trained_looking(config, tokenizer, lm_head: bool = False) -> RewardModel:
    """A built model with every tensor nudged, so LoRA B (zero at init) and heads really round-trip."""
    model = build_reward_model(config, tokenizer, lm_head=lm_head)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return model.eval()


@pytest.mark.parametrize(
    ("backbone", "overrides", "lm_head"),
    [
        ("tiny-llama", {}, False),
        ("tiny-llama", {"lora": None}, True),
        ("tiny-mistral", {"fusion": "add"}, True),
        ("tiny-llama", {"gaze_layout": "reference"}, False),
        ("tiny-llama", {"fidelity": "reference"}, False),  # a bias-free head, frozen projector
        ("tiny-mistral", {"fusion": "add", "gaze_layout": "reference", "lora": None}, True),
        ("tiny-bert", {"fusion": "none", "lora": None}, False),
        ("tiny-bert", {"num_outputs": 2}, False),
    ],
)
def test_round_trip_gives_identical_rewards(tmp_path, tokenizers, backbone, overrides, lm_head):
    config, tokenizer = tiny_config(backbone, **overrides), tokenizer_for(tokenizers, backbone)
    model = trained_looking(config, tokenizer, lm_head)
    batch = make_batch(tokenizer)
    with torch.no_grad():
        before = model(**batch, return_lm_logits=lm_head)
    save_reward_model(model, tokenizer, config, READING_MODEL_INPUTS, tmp_path / "rm")
    loaded, loaded_tokenizer, loaded_config = load_reward_model(tmp_path / "rm")
    assert loaded_config == config and not loaded.training
    assert InputSpec.read(tmp_path / "rm") == READING_MODEL_INPUTS  # the directory describes itself
    assert (tmp_path / "rm" / "adapter").exists() == (config.lora is not None)
    reloaded_batch = make_batch(loaded_tokenizer)
    assert torch.equal(reloaded_batch["input_ids"], batch["input_ids"])
    with torch.no_grad():
        after = loaded(**batch, return_lm_logits=lm_head)
    assert torch.equal(after.rewards, before.rewards)
    if lm_head:
        assert torch.equal(after.lm_logits, before.lm_logits)


def test_save_takes_a_gathered_state_dict(tmp_path, tokenizers):
    """As after DeepSpeed ZeRO-3: the module gives the structure, the full weights come separately."""
    config, tokenizer = tiny_config(), tokenizers["tiny-llama"]
    trained = trained_looking(config, tokenizer)
    structure_only = build_reward_model(config, tokenizer)
    save_reward_model(
        structure_only, tokenizer, config, READING_MODEL_INPUTS, tmp_path / "rm", trained.state_dict()
    )
    loaded, _, _ = load_reward_model(tmp_path / "rm")
    batch = make_batch(tokenizer)
    with torch.no_grad():
        assert torch.equal(loaded(**batch).rewards, trained(**batch).rewards)


def test_unknown_format_is_rejected(tmp_path, tokenizers):
    config, tokenizer = tiny_config(fusion="none"), tokenizers["tiny-llama"]
    save_reward_model(build_reward_model(config, tokenizer), tokenizer, config, TEXT_ONLY_INPUTS, tmp_path)
    (tmp_path / "reward_model.json").write_text('{"format": 99, "lm_head": false}')
    with pytest.raises(ValueError, match="format 99"):
        load_reward_model(tmp_path)


def _saved(tmp_path, tokenizers, **overrides):
    config, tokenizer = tiny_config(**overrides), tokenizers["tiny-llama"]
    return save_reward_model(
        trained_looking(config, tokenizer), tokenizer, config, READING_MODEL_INPUTS, tmp_path / "rm"
    )


def test_the_manifest_lists_every_file_and_the_parts_the_config_needs(tmp_path, tokenizers):
    directory = _saved(tmp_path, tokenizers)
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    on_disk = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    assert sorted(manifest["files"]) == [name for name in on_disk if name != MANIFEST_FILE]
    assert manifest["required"] == ["tokenizer/", "adapter/", "backbone/"]  # LoRA on a tiny backbone
    heads = manifest["files"]["heads.safetensors"]
    assert heads["size"] == (directory / "heads.safetensors").stat().st_size
    assert heads["sha256"] == hashlib.sha256((directory / "heads.safetensors").read_bytes()).hexdigest()
    assert [p.name for p in tmp_path.iterdir()] == ["rm"]  # no staging directory left beside it


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        ("no-manifest", PathNotFoundError, "no model_manifest.json"),
        ("no-adapter", PathNotFoundError, "adapter/.* is missing"),
        ("no-backbone", PathNotFoundError, "backbone/.* is missing"),
        ("truncated-heads", ConfigError, "heads.safetensors has .* bytes"),
        ("changed-heads", ConfigError, "heads.safetensors does not match its sha256"),
        ("garbled-manifest", ConfigError, "not a readable model manifest"),
        ("escaping-manifest", ConfigError, "outside the model directory"),
    ],
)
def test_an_incomplete_or_altered_model_directory_is_refused(tmp_path, tokenizers, damage, error, message):
    """Before the manifest, a directory without adapter/ loaded the base model without LoRA, silently."""
    directory = _saved(tmp_path, tokenizers)
    heads = directory / "heads.safetensors"
    if damage == "no-manifest":
        (directory / MANIFEST_FILE).unlink()
    elif damage == "no-adapter":
        shutil.rmtree(directory / "adapter")
    elif damage == "no-backbone":
        shutil.rmtree(directory / "backbone")
    elif damage == "truncated-heads":
        heads.write_bytes(heads.read_bytes()[:-10])
    elif damage == "changed-heads":
        data = bytearray(heads.read_bytes())
        data[-1] ^= 0xFF
        heads.write_bytes(bytes(data))
    elif damage == "escaping-manifest":
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
        manifest["files"]["../../etc/hostname"] = {"size": 1, "sha256": "0"}
        (directory / MANIFEST_FILE).write_text(json.dumps(manifest))
    else:
        (directory / MANIFEST_FILE).write_text('{"format": 1, "files": ')
    with pytest.raises(error, match=message) as raised:
        load_reward_model(directory)
    assert str(directory) in str(raised.value) and "\n" not in str(raised.value)


def test_a_manifest_that_omits_a_needed_part_is_refused_by_the_config(tmp_path, tokenizers):
    """A manifest written over a directory that had already lost its adapter does not make it loadable."""
    directory = _saved(tmp_path, tokenizers)
    shutil.rmtree(directory / "adapter")
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("adapter/")}
    manifest["required"] = ["tokenizer/"]
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(PathNotFoundError, match="adapter/ is missing, and the model's config needs it"):
        load_reward_model(directory)
    with pytest.raises(ConfigError, match="lacks adapter/"):
        seal_model_dir(directory)


def test_a_directory_saved_before_manifests_can_be_sealed_once_complete(tmp_path, tokenizers):
    directory = _saved(tmp_path, tokenizers, lora=None, frozen=True)
    assert required_parts(tiny_config(lora=None, frozen=True)) == ["tokenizer/", "backbone/"]  # tiny
    (directory / MANIFEST_FILE).unlink()
    with pytest.raises(PathNotFoundError, match="seal_model_dir"):
        load_reward_model(directory)
    seal_model_dir(directory)
    load_reward_model(directory)


def test_a_hub_backbone_with_lora_or_frozen_needs_no_backbone_dir():
    assert required_parts(tiny_config().model_copy(update={"backbone": "x/y", "tiny": None})) == [
        "tokenizer/",
        "adapter/",
    ]


def test_saving_over_a_model_replaces_it_whole(tmp_path, tokenizers):
    directory = _saved(tmp_path, tokenizers)
    (directory / "stale.bin").write_bytes(b"old")
    _saved(tmp_path, tokenizers, lora=None)
    assert not (directory / "stale.bin").exists() and not (directory / "adapter").exists()
    load_reward_model(directory)
