"""Save a reward model to one self-contained directory and load it back for evaluation.

Layout::

    config.yaml          the ModelConfig
    reward_model.json    format version and whether the backbone is a causal LM (LM loss)
    tokenizer/           tokenizer.save_pretrained
    heads.safetensors    value head, gaze projector (and the reference concat layout's separator
                         embeddings), implicit head (keys as in RewardModel.state_dict())
    adapter/             LoRA adapter (peft save_pretrained), when LoRA is used
    inputs.json          how training built inputs (``InputSpec``): the gaze predictor its data used,
                         max_length and the prompt template, so scoring builds the same
    backbone/            base backbone weights (save_pretrained), for full fine-tuning and for tiny-*
                         backbones, whose random-init weights exist nowhere else
    model_manifest.json  written last: every other file with its size and sha256, and the parts the
                         config needs (``adapter/`` with LoRA, ``backbone/`` for tiny-* or full
                         fine-tuning)

With LoRA or a frozen backbone (``frozen``) on a hub backbone there is no ``backbone/``: the base comes from
``config.backbone`` again.

A directory is written beside its target and renamed into place (``Storage.replace_with`` does the same
for ``output_dir/model``, writing the manifest last on an object store), and :func:`load_reward_model`
refuses a directory whose manifest is missing or does not match its files: a half-copied model, or one
missing its adapter, never loads as something else. Directories saved before the manifest existed are
refused too, with a message saying so: train them again, or, for a directory known to be complete,
write its manifest with :func:`seal_model_dir` (which checks the parts its config needs).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from gazerm.config import dump_config
from gazerm.errors import ConfigError
from gazerm.model.config import ModelConfig
from gazerm.model.inputs import InputSpec
from gazerm.model.manifest import FORMAT_VERSION, required_parts, verify_model_dir, write_manifest
from gazerm.model.reward_model import RewardModel, add_token_rows, load_backbone
from gazerm.storage import staged_dir

HEAD_PREFIXES = ("value_head.", "projector.", "implicit_head.", "separators")
_BACKBONE_PREFIX = "backbone."
_PEFT_PREFIX = "base_model.model."


def save_reward_model(
    model: RewardModel,
    tokenizer: PreTrainedTokenizerFast,
    config: ModelConfig,
    inputs: InputSpec,
    directory: str | Path,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model`` and how to build its inputs to ``directory``. ``state_dict`` (keys as
    ``model.state_dict()``) replaces the model's own tensors, e.g. the full weights gathered from
    DeepSpeed ZeRO-3 partitions; ``model`` is then only consulted for its structure (LoRA or not, HF
    configs). Call it on one rank only. The directory is written beside ``directory`` and renamed into
    place, its manifest last: what was there before is replaced, never mixed with the new files."""
    with staged_dir(directory) as staging:
        _write_model(model, tokenizer, config, inputs, staging, state_dict)
        write_manifest(staging, config)
    return Path(directory)


def _write_model(
    model: RewardModel,
    tokenizer: PreTrainedTokenizerFast,
    config: ModelConfig,
    inputs: InputSpec,
    out: Path,
    state_dict: dict[str, torch.Tensor] | None,
) -> None:
    weights = model.state_dict() if state_dict is None else state_dict
    heads = {k: v.detach().cpu().contiguous() for k, v in weights.items() if k.startswith(HEAD_PREFIXES)}
    save_file(heads, str(out / "heads.safetensors"), metadata={"format": "pt"})
    backbone = {
        k.removeprefix(_BACKBONE_PREFIX): v for k, v in weights.items() if k.startswith(_BACKBONE_PREFIX)
    }
    if isinstance(model.backbone, PeftModel):
        # Rows a tokenizer added (model.pad_token: new) are frozen and drawn again from model.seed on load
        # (reward_model.add_token_rows): peft's "auto" would save the whole resized matrix, after a hub call.
        model.backbone.save_pretrained(str(out / "adapter"), state_dict=backbone, save_embedding_layers=False)
        backbone = _without_lora(backbone)
    if config.is_tiny or (config.lora is None and not config.frozen):
        model.hf_model.save_pretrained(str(out / "backbone"), state_dict=backbone)
    tokenizer.save_pretrained(str(out / "tokenizer"))
    (out / "config.yaml").write_text(dump_config(config))
    inputs.write(out)
    lm_head = model.hf_model.get_output_embeddings() is not None
    (out / "reward_model.json").write_text(json.dumps({"format": FORMAT_VERSION, "lm_head": lm_head}))


def load_reward_model(directory: str | Path) -> tuple[RewardModel, PreTrainedTokenizerFast, ModelConfig]:
    """The saved model in eval mode (on CPU), its tokenizer and config; outputs match the saved model's.
    The directory must match its manifest (:func:`verify_model_dir`)."""
    src = Path(directory)
    config = verify_model_dir(src)
    meta = json.loads((src / "reward_model.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(src / "tokenizer"))
    has_backbone = "backbone/" in required_parts(config)
    backbone = load_backbone(config, src / "backbone" if has_backbone else config.backbone, meta["lm_head"])
    add_token_rows(backbone, len(tokenizer), config.seed)  # a new <PAD> of a backbone not saved
    if config.lora is not None:
        backbone = PeftModel.from_pretrained(backbone, str(src / "adapter"))
    with torch.random.fork_rng(devices=[]):  # head init is overwritten below; keep the caller's RNG as is
        model = RewardModel(backbone, config)
    missing, unexpected = model.load_state_dict(load_file(str(src / "heads.safetensors")), strict=False)
    missing_heads = [k for k in missing if k.startswith(HEAD_PREFIXES)]
    if missing_heads or unexpected:
        raise ConfigError(f"{src}/heads.safetensors: missing {missing_heads}, unexpected {unexpected}")
    return model.eval(), tokenizer, config


def load_weights_into(model: RewardModel, directory: str | Path) -> None:
    """Copy a saved model's weights (backbone, LoRA adapter, projector, value head) into ``model``, built
    fresh from its own config, so training continues from them (``ModelConfig.init_from``).

    Only the weights move: settings that shape no tensor (pooling, dropout, seed) come from ``model``'s
    config. A saved model of another architecture is refused, naming what differs.
    """
    saved, _, _ = load_reward_model(directory)
    wanted, found = _architecture(model), _architecture(saved)
    differences = [
        f"{key}: saved {found[key]!r}, configured {wanted[key]!r}"
        for key in wanted
        if wanted[key] != found[key]
    ]
    if differences:
        raise ConfigError(
            f"init_from {directory}: the saved model's architecture differs: {'; '.join(differences)}"
        )
    model.load_state_dict(saved.state_dict(), strict=True)


def _architecture(model: RewardModel) -> dict[str, object]:
    """What decides the model's tensors: a mismatch here means the weights cannot carry over."""
    config = model.model_config
    return {
        "backbone": config.backbone,
        "tiny": config.tiny.model_dump() if config.is_tiny else None,
        "fusion": config.fusion,
        "gaze_layout": None if model.projector is None else config.gaze_layout,
        "projector": None if model.projector is None else (config.features_used, config.fp_hidden),
        "num_outputs": config.num_outputs,
        "head_bias": model.value_head.bias is not None,
        "implicit_head": None
        if model.implicit_head is None
        else (model.implicit_head.in_features, config.fp_hidden),
        "lora": None if config.lora is None else config.lora.model_dump(exclude={"dropout"}),
        "lm_head": model.hf_model.get_output_embeddings() is not None,
    }


def _without_lora(peft_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A PeftModel state dict → the wrapped model's original one (LoRA tensors dropped, names restored)."""
    return {
        k.removeprefix(_PEFT_PREFIX).replace(".base_layer.", "."): v
        for k, v in peft_state.items()
        if ".lora_" not in k
    }
