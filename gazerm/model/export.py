"""A saved gazerm model → a transformers checkpoint that TRL, OpenRLHF, vLLM and RewardBench load.

LoRA is merged into the backbone. A text-only model whose reward is what a transformers
``*ForSequenceClassification`` computes (the last non-pad token's hidden state through a bias-free
linear score) becomes that standard class and loads without gazerm. Any other model (gaze fusion, an
implicit-feedback head, ``cls``/``mean`` pooling, a value-head bias) is saved as
:class:`~gazerm.model.remote.GazeRewardModel`, loaded with ``trust_remote_code=True``.

Either way the tokenizer is saved with the chat template the model was trained with (the plain
Human/Assistant transcript is written as one), left truncation and ``model_max_length``, and the
export is checked before it is written: the exported model must give the rewards the gazerm model
gives on probe inputs.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from peft import PeftModel
from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerFast

from gazerm.errors import ConfigError, ExistsError
from gazerm.features.base import N_FEATURES, word_spans
from gazerm.model.inputs import InputSpec, ModelInputs, PromptResponse
from gazerm.model.io import load_reward_model
from gazerm.model.pipeline import InputPipeline
from gazerm.model.remote import GazeRewardConfig, GazeRewardModel
from gazerm.model.reward_model import RewardModel
from gazerm.model.templates import plain_chat_template
from gazerm.storage import staged_dir

ExportKind = Literal["standard", "gazerm"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# How far the exported model's rewards may be from the gazerm model's on the probes, by the dtype both
# compute in (absolute, relative): float32 agrees to float error; a bf16/fp16 classifier rounds its
# logits in that dtype, where gazerm's value head computes in float32.
TOLERANCES = {torch.float32: (1e-4, 0.0), torch.bfloat16: (1e-3, 1e-2), torch.float16: (1e-3, 2e-3)}
_PROBES = (
    ("How do I bake bread at home?", "Mix flour, water, yeast and salt, then knead and bake it."),
    ("hi?", "Hello there."),
)


@dataclass(frozen=True)
class Exported:
    directory: Path
    kind: ExportKind
    reasons: list[str]  # why the model needs gazerm's modeling code; empty for a standard checkpoint
    max_difference: float  # largest |exported - gazerm| reward on the probe inputs, before any dtype cast


def export_model(
    model_dir: str | Path, out: str | Path, dtype: str | None = None, force: bool = False
) -> Exported:
    """Write ``model_dir`` (a gazerm model directory) to ``out`` as a transformers checkpoint, cast to
    ``dtype`` (one of :data:`DTYPES`; None keeps the model's). ``out`` must be empty unless ``force``."""
    target = Path(out)
    source, destination = Path(model_dir).resolve(), target.resolve()
    if destination == source or destination in source.parents or source in destination.parents:
        raise ConfigError(
            f"{target}: the export would overwrite its own model {model_dir}; choose a directory outside it"
        )
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not force:
        raise ExistsError(f"{target} exists and is not empty; choose another directory or pass --force")
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r}: expected one of {sorted(DTYPES)}")
    model, tokenizer, _ = load_reward_model(model_dir)
    inputs = InputSpec.read(model_dir)
    probes = probe_inputs(InputPipeline.from_spec(inputs, tokenizer, model.model_config))
    with torch.no_grad():
        expected = model(**probes.forward_kwargs()).rewards.reshape(len(_PROBES), -1)
    _merge_lora(model)
    classifier = _sequence_classifier(model, tokenizer.pad_token_id)
    reasons = standard_blockers(model, classifier is not None, tokenizer.pad_token_id, probes)
    exported = classifier if classifier is not None and not reasons else _as_gazerm(model, inputs)
    with torch.no_grad():
        got = _rewards(exported, probes)
    difference = float((got - expected).abs().max())
    atol, rtol = TOLERANCES[model.transformer.dtype]
    if difference > atol + rtol * float(expected.abs().max()):
        raise RuntimeError(f"the exported model's rewards differ from the gazerm model's by {difference:.2e}")
    if dtype is not None:
        exported.to(DTYPES[dtype])
    kind: ExportKind = "gazerm" if reasons else "standard"
    with staged_dir(target) as staging:
        exported.save_pretrained(str(staging))
        _save_tokenizer(tokenizer, inputs, staging)
        inputs.write(staging)
        (staging / "README.md").write_text(_model_card(Path(model_dir), kind, reasons, inputs))
    return Exported(target, kind, reasons, difference)


def standard_blockers(
    model: RewardModel, has_classifier: bool, pad_token_id: int, probes: ModelInputs
) -> list[str]:
    """Why a transformers ``*ForSequenceClassification`` would not compute ``model``'s reward (empty: it
    would); ``has_classifier``: the architecture has one with a bias-free score layer."""
    config = model.model_config
    reasons = []
    if config.fusion != "none":
        layout = ", gaze_layout=reference" if config.gaze_layout == "reference" else ""
        reasons.append(f"it fuses gaze (fusion={config.fusion}{layout})")
    if model.implicit_head is not None:
        reasons.append("it adds an implicit-feedback term")
    if model.pooling != "last":
        reasons.append(f"it pools the {model.pooling!r} token(s), a score layer reads the last one")
    if model.value_head.bias is not None and bool(model.value_head.bias.detach().ne(0).any()):
        reasons.append("its value head has a bias (a ratings model), a score layer has none")
    if not has_classifier:
        reasons.append(
            f"transformers has no bias-free sequence classifier for {model.transformer.config.model_type}"
        )
    last_tokens = probes.input_ids.gather(1, probes.attention_mask.sum(1, keepdim=True) - 1)
    if bool(last_tokens.eq(pad_token_id).any()):
        reasons.append("its inputs end with the pad token, which a score layer skips as padding")
    return reasons


def probe_inputs(pipeline: InputPipeline, probes: tuple[tuple[str, str], ...] = _PROBES) -> ModelInputs:
    """The (prompt, response) ``probes`` padded through the model's own input pipeline, with made-up gaze
    on every word (the prompt's too, for a model that gazes the prompt)."""
    sequences = []
    for prompt, response in probes:
        prefix, placed = pipeline.encoder.prefix(None, prompt, *made_up_gaze(prompt))
        sequences.append(PromptResponse(prefix, response, *made_up_gaze(response), prompt=placed))
    return pipeline.inputs(sequences)


def made_up_gaze(text: str) -> tuple[np.ndarray, np.ndarray]:
    spans = np.asarray(word_spans(text), dtype=np.int64)
    return spans, np.linspace(0.1, 0.9, len(spans) * N_FEATURES, dtype=np.float32).reshape(-1, N_FEATURES)


def _merge_lora(model: RewardModel) -> None:
    """Fold LoRA into the backbone's weights and keep only the bare transformer: an LM head trained for
    the LM loss plays no part in the reward."""
    backbone = model.backbone.merge_and_unload() if isinstance(model.backbone, PeftModel) else model.backbone
    model.backbone = backbone.base_model
    model.model_config = model.model_config.model_copy(update={"lora": None, "init_from": None})


def _sequence_classifier(model: RewardModel, pad_token_id: int) -> PreTrainedModel | None:
    """The architecture's ``*ForSequenceClassification`` around ``model``'s (merged) transformer itself,
    no weight copied, its score layer the value head's weight; None where the architecture has no
    bias-free ``score`` layer."""
    transformer = model.transformer
    config = copy.deepcopy(transformer.config)
    config.num_labels, config.pad_token_id = model.model_config.num_outputs, pad_token_id
    try:
        with torch.device("meta"):  # every weight is replaced below: allocate none
            classifier = AutoModelForSequenceClassification.from_config(config)
    except ValueError:  # no sequence-classification class for this model type
        return None
    score = getattr(classifier, "score", None)
    if not isinstance(score, nn.Linear) or score.bias is not None:
        return None
    setattr(classifier, classifier.base_model_prefix, transformer)
    classifier.score = nn.Linear(score.in_features, score.out_features, bias=False, dtype=transformer.dtype)
    with torch.no_grad():
        classifier.score.weight.copy_(model.value_head.weight)
    return classifier.eval()


def _as_gazerm(model: RewardModel, inputs: InputSpec) -> GazeRewardModel:
    backbone_config = model.transformer.config.to_dict()
    reward_config = model.model_config.model_copy(update={"pooling": model.pooling}).model_dump(mode="json")
    config = GazeRewardConfig(
        backbone=backbone_config,
        reward=reward_config,
        inputs={"gaze": inputs.gaze, "max_length": inputs.max_length, "template": inputs.template},
        num_labels=model.model_config.num_outputs,
    )
    GazeRewardConfig.register_for_auto_class()
    GazeRewardModel.register_for_auto_class("AutoModelForSequenceClassification")
    with torch.device("meta"):
        wrapper = GazeRewardModel(config)
    wrapper.reward = model  # the loaded weights themselves, not a copy
    return wrapper.eval()


def _rewards(exported: PreTrainedModel, probes: ModelInputs) -> torch.Tensor:
    kwargs = probes.forward_kwargs()
    if not isinstance(exported, GazeRewardModel):  # a standard classifier reads text only
        kwargs = {"input_ids": kwargs["input_ids"], "attention_mask": kwargs["attention_mask"]}
    return exported(**kwargs).logits.float()


def _save_tokenizer(tokenizer: PreTrainedTokenizerFast, inputs: InputSpec, target: Path) -> None:
    """The tokenizer as training used it: its template as the chat template, inputs cut from the left."""
    if inputs.template == "plain":
        tokenizer.chat_template = plain_chat_template(tokenizer)
    tokenizer.truncation_side = "left"
    tokenizer.padding_side = "right"
    tokenizer.model_max_length = inputs.max_length
    tokenizer.save_pretrained(str(target))


def _model_card(source: Path, kind: ExportKind, reasons: list[str], inputs: InputSpec) -> str:
    loading = "from_pretrained(path)  # no gazerm needed"
    if kind == "gazerm":
        loading = "from_pretrained(path, trust_remote_code=True)  # needs gazerm installed"
    why = "" if kind == "standard" else f"\nIt uses gazerm's modeling code because {'; '.join(reasons)}.\n"
    gaze = json.dumps(inputs.gaze)
    return (
        f"# gazerm reward model\n\nExported by `gazerm export` from `{source}`.\n{why}\n"
        f"```python\nfrom transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
        f"model = AutoModelForSequenceClassification.{loading}\n"
        "tokenizer = AutoTokenizer.from_pretrained(path)\n```\n\n"
        "Format a conversation with `tokenizer.apply_chat_template(messages)` (the last message is the "
        f"assistant's response); the reward is `logits[:, 0]`. Trained on the `{inputs.template}` prompt "
        f"template, at most {inputs.max_length} tokens (longer inputs are cut from the left).\n\n"
        f"Gaze features (`inputs.json`): {gaze}.\n"
    )
