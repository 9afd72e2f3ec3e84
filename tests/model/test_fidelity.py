"""``model.fidelity: reference`` and the parts it switches on, each against what the paper's code does."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaModel

from gazerm.config import load_config, with_overrides
from gazerm.model.config import REFERENCE_DEFAULTS, ModelConfig
from gazerm.model.io import load_reward_model, save_reward_model
from gazerm.model.reward_model import NEW_PAD_TOKEN, build_reward_model, build_tokenizer
from gazerm.model.tokenizers import build_local_tokenizer
from gazerm.train.config import TrainJobConfig
from gazerm.train.kinds import loss_kind
from tests.helpers import TEXT_ONLY_INPUTS
from tests.model.conftest import make_batch, tiny_config, tokenizer_for


def test_the_switch_defaults_every_part_to_the_reference_and_a_set_field_wins():
    config = ModelConfig(fidelity="reference", pair_forward="joint")
    assert config.pair_forward == "joint"
    for name, value in REFERENCE_DEFAULTS.items():
        if name != "pair_forward":
            assert getattr(config, name) == value, name
    plain = ModelConfig()
    assert (plain.train_gaze, plain.head, plain.pair_forward, plain.precision) == (
        True,
        "gazerm",
        "joint",
        "bf16",
    )


def test_a_set_override_of_the_switch_moves_every_field_the_config_left_to_it():
    """Overrides land on a config dumped less what the switch fills (gazerm.config.with_overrides), so
    --set model.fidelity=... switches those fields, in both directions, and keeps each one the config set,
    at whatever value."""
    base = {"model": {"fusion": "add", "head": "reference", "train_gaze": True}, "run": {"eval_every": 20}}
    job = load_config(TrainJobConfig, base, {"model.fidelity": "reference"})
    assert (job.model.pair_forward, job.model.gaze_layout, job.model.train_gaze, job.model.head) == (
        "separate",
        "reference",
        True,
        "reference",
    )
    assert (job.run.select, job.run.eval_every, job.optim.schedule_horizon) == ("best", 20, "full_batches")
    back = with_overrides(job, {"model.fidelity": "gazerm"})
    assert (back.model.pair_forward, back.model.train_gaze, back.model.head) == ("joint", True, "reference")
    assert (back.run.select, back.run.eval_every, back.optim.schedule_horizon) == ("last", 20, "trained")


def test_a_field_set_to_the_reference_value_stays_when_the_switch_is_turned_off():
    job = load_config(
        TrainJobConfig, {"model": {"fidelity": "reference", "pad_token": "new"}, "run": {"eval_every": 64}}
    )
    back = with_overrides(job, {"model.fidelity": "gazerm"})
    assert (back.model.pad_token, back.run.eval_every) == ("new", 64)
    assert (back.model.head, back.run.select) == ("gazerm", "last")  # left to the switch: switched back


def test_a_dump_is_complete_and_reads_back_to_the_same_config():
    job = TrainJobConfig(model=ModelConfig(fidelity="reference"))
    dumped = job.model_dump(mode="json")
    for section in ("model", "run", "optim"):
        assert set(dumped[section]) == set(type(getattr(job, section)).model_fields), section
    assert TrainJobConfig.model_validate(dumped) == job
    assert dumped["model"]["pad_token"] == "new" and dumped["run"]["eval_every"] == 64


def reference_model(tokenizers, fusion: str = "concat", **overrides):
    config = tiny_config(fidelity="reference", fusion=fusion, fp_dropout=(0.0, 0.0), **overrides)
    return build_reward_model(config, tokenizer_for(tokenizers, "tiny-llama"))


@pytest.mark.parametrize("fusion", ["concat", "add"])
def test_an_optimiser_step_in_reference_mode_leaves_the_projector_and_separators_as_built(tokenizers, fusion):
    model = reference_model(tokenizers, fusion)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    batch = make_batch(tokenizer_for(tokenizers, "tiny-llama"))
    loss = -torch.nn.functional.logsigmoid(model(**batch).rewards.diff()).mean()
    loss.backward()
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert not any(name.startswith(("projector.", "separators")) for name in changed)
    assert "value_head.weight" in changed and any("lora_B" in name for name in changed)
    assert all("lora_" in name or name == "value_head.weight" for name in changed)


def test_reference_separators_are_drawn_like_new_embedding_rows_not_the_mean(tokenizers):
    model = reference_model(tokenizers)
    assert not model.separators.requires_grad
    mean = model.transformer.get_input_embeddings().weight.mean(0)
    assert not torch.allclose(model.separators[0], mean)
    assert 0.01 < float(model.separators.detach().std()) < 0.03  # 128 draws of N(0, 0.02)


def test_the_reference_head_is_a_bias_free_score_layer_drawn_n_0_002(tokenizers):
    model = reference_model(tokenizers)
    assert model.value_head.bias is None
    assert 0.01 < float(model.value_head.weight.detach().std()) < 0.03
    model.freeze_head_bias()  # nothing to freeze, no error


def test_a_tokenizer_without_pad_gets_a_new_pad_row_drawn_n_0_002(tmp_path):
    local = build_local_tokenizer("llama")
    local.pad_token = None
    local.save_pretrained(tmp_path)
    config = tiny_config(tokenizer=str(tmp_path), fidelity="reference")
    tokenizer = build_tokenizer(config)
    assert tokenizer.pad_token == NEW_PAD_TOKEN and tokenizer.pad_token_id == len(local)
    model = build_reward_model(config, tokenizer)
    rows = model.transformer.get_input_embeddings().weight
    assert rows.shape[0] == len(tokenizer)
    assert 0.005 < float(rows[-1].detach().std()) < 0.04  # 64 draws of N(0, 0.02)
    assert tiny_config(tokenizer=str(tmp_path)).pad_token == "eos"
    assert build_tokenizer(tiny_config(tokenizer=str(tmp_path))).pad_token == local.eos_token


def test_a_saved_lora_model_on_a_backbone_it_does_not_save_draws_the_same_pad_row_again(tmp_path):
    """LoRA over a directory (hub-like) backbone saves no backbone; the <PAD> row its last-slot reward reads
    is drawn from the seed again on load."""
    local = build_local_tokenizer("llama")
    local.pad_token = None
    backbone = tmp_path / "backbone"
    local.save_pretrained(backbone)
    shape = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2}
    LlamaModel(LlamaConfig(vocab_size=len(local), num_hidden_layers=1, **shape)).save_pretrained(backbone)
    config = ModelConfig(backbone=str(backbone), fidelity="reference", seed=3)
    tokenizer = build_tokenizer(config)
    model = build_reward_model(config, tokenizer).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:  # what training changes (LoRA B is zero at init)
                parameter.add_(0.05)
    batch = make_batch(tokenizer)  # rows of two lengths: the shorter one's reward is read from a <PAD> slot
    save_reward_model(model, tokenizer, config, TEXT_ONLY_INPUTS, tmp_path / "rm")
    assert not (tmp_path / "rm" / "backbone").exists()
    adapter = load_file(tmp_path / "rm" / "adapter" / "adapter_model.safetensors")
    assert adapter and not any("embed_tokens" in name for name in adapter)  # the resized matrix is not saved
    loaded, _, _ = load_reward_model(tmp_path / "rm")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).rewards, model(**batch).rewards, rtol=0, atol=0)


def test_separate_pair_forwards_score_each_side_padded_to_its_own_longest_row(tokenizers):
    """Chosen rows short, rejected rows long: joint padding gives the chosen rows more padding slots, which
    the reference's last-slot reward reads; two forwards give each side only its own padding."""
    tokenizer = tokenizer_for(tokenizers, "tiny-llama")
    texts = [
        "Human: hi? Assistant: fox.",
        "Human: hi? Assistant: The dog.",
        *["Human: How do I bake bread at home? Assistant: Mix flour, water, yeast and salt."] * 2,
    ]
    batch = make_batch(tokenizer, texts)
    model = reference_model(tokenizers).eval()
    assert loss_kind("pairwise").forward_groups(model.model_config) == 2
    with torch.no_grad():
        grouped = model(**batch, groups=2).rewards
        joint = model(**batch).rewards
        chosen_length = int(batch["attention_mask"][:2].sum(-1).max())
        chosen = model(**{k: v[:2, :chosen_length] for k, v in batch.items()}).rewards
        rejected = model(**{k: v[2:] for k, v in batch.items()}).rewards
    torch.testing.assert_close(grouped, torch.cat([chosen, rejected]))
    assert not torch.allclose(grouped[:2], joint[:2])
    torch.testing.assert_close(grouped[2:], joint[2:])
    assert loss_kind("pairwise").forward_groups(ModelConfig()) == 1
