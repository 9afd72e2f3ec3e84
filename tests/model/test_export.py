"""``gazerm export``: the transformers checkpoint gives the rewards ``gazerm score`` gives, loaded the way
TRL, RewardBench and vLLM load it (``AutoModelForSequenceClassification``, inputs from the tokenizer's
chat template), with gazerm's own modeling code only where a standard class cannot compute the reward."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from typer.testing import CliRunner

from gazerm.cli import app
from gazerm.errors import ConfigError, ExistsError
from gazerm.features.featurize import build_predictor
from gazerm.model.export import export_model, standard_blockers
from gazerm.model.inputs import InputSpec, PromptResponse
from gazerm.model.io import load_reward_model, save_reward_model
from gazerm.model.manifest import seal_model_dir
from gazerm.model.pipeline import InputPipeline
from gazerm.model.reward_model import build_tokenizer
from gazerm.score import RewardScorer
from tests.conftest import save_random_model
from tests.helpers import SMOLLM2, require_smollm2
from tests.model.conftest import tiny_config
from tests.model.test_io import trained_looking

CONTEXT = [
    {"role": "user", "content": "Hello there."},
    {"role": "assistant", "content": "Hi! How can I help?"},
]
ROWS = [
    ("How do I bake bread at home?", "Mix flour, water, yeast and salt, then knead.", None),
    ("Say hi.", "Hi.", CONTEXT),
    ("Describe a fox.", "The quick brown fox jumps over the lazy dog. " * 3, None),
]
# Room for every row: tools cut long inputs from the left with the BOS token, gazerm keeps BOS.
MAX_LENGTH = 256
TOLERANCE = 1e-4


def zero_value_head_bias(model_dir) -> None:
    """As a pairwise run leaves it: the trainer freezes the bias of shift-invariant losses at 0."""
    heads = load_file(str(model_dir / "heads.safetensors"))
    heads["value_head.bias"].zero_()
    save_file(heads, str(model_dir / "heads.safetensors"), metadata={"format": "pt"})
    seal_model_dir(model_dir)  # the directory was changed on purpose: its manifest follows


def gazerm_rewards(model_dir) -> np.ndarray:
    """What ``gazerm score`` gives each row."""
    prompts, responses, contexts = zip(*ROWS, strict=True)
    return RewardScorer(model_dir).score(list(prompts), list(responses), list(contexts))


def chat_template_rewards(out) -> np.ndarray:
    """A standard checkpoint scored as TRL/RewardBench do: chat-template ids, right-padded, no gazerm."""
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    conversations = [
        [*(context or []), {"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        for prompt, response, context in ROWS
    ]
    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
    batch = tokenizer(texts, add_special_tokens=False, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits.squeeze(-1).numpy()


def test_a_text_only_model_becomes_a_standard_classifier_with_the_same_rewards(tmp_path):
    model_dir = save_random_model(tmp_path / "rm", predictor="none", max_length=MAX_LENGTH, fusion="none")
    zero_value_head_bias(model_dir)
    exported = export_model(model_dir, tmp_path / "hf")
    assert exported.kind == "standard" and exported.reasons == []
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and "auto_map" not in config
    assert len(config["id2label"]) == 1
    assert not (tmp_path / "hf" / "remote.py").exists()  # loads without gazerm's code
    np.testing.assert_allclose(
        chat_template_rewards(tmp_path / "hf"), gazerm_rewards(model_dir), atol=TOLERANCE
    )


def test_a_chat_template_model_exports_with_its_tokenizers_template(tmp_path):
    """A tiny backbone on the real SmolLM2 BPE tokenizer and its chat template (``data.template: chat``)."""
    require_smollm2()
    config = tiny_config(tokenizer=SMOLLM2, fusion="none")
    tokenizer = build_tokenizer(config)
    model = trained_looking(config, tokenizer)
    with torch.no_grad():
        model.value_head.bias.zero_()
    inputs = InputSpec({"predictor": "none"}, max_length=MAX_LENGTH, template="chat")
    model_dir = save_reward_model(model, tokenizer, config, inputs, tmp_path / "rm")
    assert export_model(model_dir, tmp_path / "hf").kind == "standard"
    np.testing.assert_allclose(
        chat_template_rewards(tmp_path / "hf"), gazerm_rewards(model_dir), atol=TOLERANCE
    )


@pytest.mark.parametrize(
    ("overrides", "lm_head", "reason"),
    [
        ({}, False, "it fuses gaze (fusion=concat)"),
        ({"fusion": "add", "lora": None}, True, "it fuses gaze (fusion=add)"),
        ({"backbone": "tiny-bert", "fusion": "none"}, False, "it pools the 'cls' token(s)"),
        ({"fusion": "none", "num_outputs": 2}, False, "its value head has a bias"),
        ({"gaze_layout": "reference"}, False, "it fuses gaze (fusion=concat, gaze_layout=reference)"),
        (
            {"fusion": "add", "gaze_layout": "reference", "lora": None},
            True,
            "it fuses gaze (fusion=add, gaze_layout=reference)",
        ),
        (  # the reference code's padding traits too: the exported model reads the same padded batch
            {"gaze_layout": "reference", "positions": "padded", "pooling": "last_slot"},
            False,
            "it fuses gaze (fusion=concat, gaze_layout=reference)",
        ),
    ],
)
def test_other_models_export_with_gazerms_modeling_code_and_the_same_rewards(
    tmp_path, overrides, lm_head, reason
):
    config = tiny_config(**overrides)
    tokenizer = build_tokenizer(config)
    inputs = InputSpec({"predictor": "reading_model"}, max_length=MAX_LENGTH)
    model_dir = save_reward_model(
        trained_looking(config, tokenizer, lm_head), tokenizer, config, inputs, tmp_path / "rm"
    )
    exported = export_model(model_dir, tmp_path / "hf")
    assert exported.kind == "gazerm" and any(r.startswith(reason) for r in exported.reasons)
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "remote.GazeRewardConfig",
        "AutoModelForSequenceClassification": "remote.GazeRewardModel",
    }
    assert InputSpec.read(tmp_path / "hf") == inputs  # the gaze predictor's spec travels with it

    loaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "hf"), trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "hf"), trust_remote_code=True)
    encoder = InputPipeline.from_spec(inputs, tokenizer, config).encoder
    predictor = build_predictor("reading_model")
    sequences = []
    for prompt, response, context in ROWS:
        prompt_gaze, response_gaze = predictor.predict([prompt, response])
        prefix, placed = encoder.prefix(context, prompt, np.asarray(prompt_gaze.spans), prompt_gaze.features)
        gaze = (np.asarray(response_gaze.spans), response_gaze.features)
        sequences.append(PromptResponse(prefix, response, *gaze, prompt=placed))
    batch = encoder.pad(encoder.encode(sequences))
    assert batch.gaze_mask.any() and (
        config.gazes_prompt or not (batch.gaze_mask & ~batch.response_mask).any()
    )
    with torch.no_grad():
        logits = loaded.eval()(**batch.forward_kwargs()).logits.numpy()
    expected = gazerm_rewards(model_dir).reshape(len(ROWS), -1)
    np.testing.assert_allclose(logits, expected, atol=TOLERANCE)


def test_a_pad_token_at_the_end_of_inputs_rules_out_the_standard_class(tmp_path):
    model_dir = save_random_model(tmp_path / "rm", predictor="none", fusion="none")
    zero_value_head_bias(model_dir)
    model, tokenizer, _ = load_reward_model(model_dir)
    encoder = InputPipeline.from_spec(
        InputSpec({"predictor": "none"}, 48), tokenizer, model.model_config
    ).encoder
    no_gaze = (np.zeros((0, 2)), np.zeros((0, 5)))
    probes = encoder.pad(encoder.encode([PromptResponse("Q: ", text, *no_gaze) for text in ("a b c", "a")]))
    assert standard_blockers(model, True, tokenizer.pad_token_id, probes) == []
    last = int(probes.attention_mask[1].sum()) - 1
    probes.input_ids[1, last] = tokenizer.pad_token_id  # as if the template ended replies with it
    assert standard_blockers(model, True, tokenizer.pad_token_id, probes) == [
        "its inputs end with the pad token, which a score layer skips as padding"
    ]


def test_export_refuses_a_non_empty_directory_unless_forced(tmp_path):
    model_dir = save_random_model(tmp_path / "rm", predictor="none", fusion="none")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "keep.txt").write_text("mine")
    with pytest.raises(ExistsError, match="--force"):
        export_model(model_dir, tmp_path / "hf")
    assert export_model(model_dir, tmp_path / "hf", force=True).kind == "gazerm"
    assert not (tmp_path / "hf" / "keep.txt").exists()  # replaced, not written over
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExistsError):
        export_model(model_dir, tmp_path / "file")


def test_a_bf16_model_exports_within_bf16_rounding(tmp_path):
    """As a GPU run saves it: the check allows the classifier's bf16 rounding of its logits."""
    config = tiny_config(fusion="none")
    tokenizer = build_tokenizer(config)
    model = trained_looking(config, tokenizer).to(torch.bfloat16)
    with torch.no_grad():
        model.value_head.bias.zero_()
    inputs = InputSpec({"predictor": "none"}, max_length=MAX_LENGTH)
    model_dir = save_reward_model(model, tokenizer, config, inputs, tmp_path / "rm")
    exported = export_model(model_dir, tmp_path / "hf")
    assert exported.kind == "standard" and exported.max_difference > 0
    loaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "hf"), dtype="auto")
    assert loaded.score.weight.dtype == torch.bfloat16


def test_export_command_casts_and_says_which_kind(tmp_path):
    model_dir = save_random_model(tmp_path / "rm", predictor="none", fusion="none")
    zero_value_head_bias(model_dir)
    result = CliRunner().invoke(app, ["export", str(model_dir), str(tmp_path / "hf"), "--dtype", "bfloat16"])
    assert result.exit_code == 0, result.output
    assert "standard transformers checkpoint" in result.output
    loaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "hf"), dtype="auto")
    assert loaded.score.weight.dtype == torch.bfloat16
    missing = CliRunner().invoke(app, ["export", str(tmp_path / "none"), str(tmp_path / "x")])
    assert missing.exit_code == 2 and "not a saved reward model" in missing.output


@pytest.mark.parametrize("where", ["itself", "its-parent", "inside-it"])
def test_export_refuses_to_overwrite_its_own_model_even_forced(tmp_path, where):
    model_dir = save_random_model(tmp_path / "runs" / "rm", predictor="none", fusion="none")
    out = {"itself": model_dir, "its-parent": tmp_path / "runs", "inside-it": model_dir / "hf"}[where]
    with pytest.raises(ConfigError, match="its own model"):
        export_model(model_dir, out, force=True)
    load_reward_model(model_dir)  # untouched
