"""A reward model's architecture as the memory estimate needs it (parameter counts, linear layers), read off
a build on the ``meta`` device.

That build imports transformers and peft: seconds of a driver's start that nothing else in the driver needs
(its workers import them anyway). So each architecture is also kept in the machine's cache
(``$GAZERM_CACHE_DIR/architectures``, one small JSON file each), keyed by everything it is computed from:
the model config, the backbone's ``config.json``, the installed torch, transformers and peft, and gazerm's
model code. Deleting the folder clears it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from gazerm.cache import cache_dir, file_sha256
from gazerm.errors import ConfigError
from gazerm.model.backbones import resolve_backbone
from gazerm.model.config import ModelConfig
from gazerm.storage import write_text_atomic

if TYPE_CHECKING:
    from torch import nn
    from transformers import PretrainedConfig

log = logging.getLogger(__name__)

ARCHITECTURE_CACHE = "architectures"
# The code a model is built from (its heads, fusion, backbone wiring; the feature counts its heads read
# from ``features``) and this module's reading of it.
_PACKAGE = Path(__file__).parents[1]
_MODEL_CODE = [
    *sorted((_PACKAGE / "model").glob("*.py")),
    _PACKAGE / "features" / "base.py",
    _PACKAGE / "features" / "implicit.py",
    Path(__file__),
]


@dataclass(frozen=True)
class Linear:
    """A linear layer of the backbone: LoRA targets are counted and sized from these."""

    name: str  # the full module name, as LoRA's target_modules match it
    in_features: int
    out_features: int

    @property
    def short(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    def targeted(self, targets: list[str]) -> bool:
        return any(self.name == t or self.name.endswith(f".{t}") for t in targets)


@dataclass(frozen=True)
class Architecture:
    """What the estimate needs of a reward model, read off its meta-device build."""

    encoder: bool
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    attention_dropout: float
    hidden_dropout: float
    backbone_params: int  # tied embeddings counted once
    head_params: int  # projector, value head, implicit head: outside the backbone, always trained
    layer_params: int
    embedding_params: int
    linears: tuple[Linear, ...]  # every linear layer of the backbone
    layer_linears: tuple[Linear, ...]  # those of its first transformer layer

    def lora_params(self, config: ModelConfig) -> int:
        """``r × (in + out)`` per linear layer LoRA targets (its A and B matrices)."""
        lora = config.lora
        if lora is None:
            return 0
        return sum(
            lora.r * (x.in_features + x.out_features) for x in self.linears if x.targeted(lora.target_modules)
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        fields = json.loads(text)
        for key in ("linears", "layer_linears"):
            fields[key] = tuple(Linear(**linear) for linear in fields[key])
        return cls(**fields)


def architecture(config: ModelConfig, lm_head: bool) -> Architecture:
    """The reward model's architecture; cached, since suggestions re-estimate one config many times."""
    shape = config.model_copy(
        update={
            "lora": None,
            "quantization": "none",  # counted from the shape by estimate_worker_memory
            "gradient_checkpointing": False,
            "init_from": None,
            "attn_implementation": "sdpa",
        }
    )
    return _architecture(shape.model_dump_json(), lm_head)


@functools.lru_cache(maxsize=16)
def _architecture(config_json: str, lm_head: bool) -> Architecture:
    key = _cache_key(config_json, lm_head)
    cached = cache_dir(ARCHITECTURE_CACHE) / f"{key}.json" if key else None
    if cached is not None and cached.is_file():
        try:
            return Architecture.from_json(cached.read_text())
        except (ValueError, TypeError, KeyError):  # torn or from another layout: built again below
            pass
    built = _built_architecture(config_json, lm_head)
    if cached is not None:
        try:
            write_text_atomic(cached, built.to_json())
        except OSError as error:  # a read-only or full cache: every run builds it, as before the cache
            log.warning("architecture not cached in %s: %s", cached.parent, error)
    return built


def _cache_key(config_json: str, lm_head: bool) -> str | None:
    """What the architecture is computed from, hashed; None for a hub backbone (its config is the hub's)."""
    config = ModelConfig.model_validate_json(config_json)
    backbone_config = None
    if not config.is_tiny:
        path = Path(resolve_backbone(config.backbone).path) / "config.json"
        if not path.is_file():
            return None
        backbone_config = file_sha256(path)
    parts = [config_json, lm_head, backbone_config, *_installed_code()]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def _installed_code() -> tuple[list[str], str]:
    """The library versions and the digest of gazerm's model code: read once a process, not per config."""
    libraries = [version(name) for name in ("torch", "transformers", "peft")]
    return libraries, hashlib.sha256(b"".join(source.read_bytes() for source in _MODEL_CODE)).hexdigest()


def _built_architecture(config_json: str, lm_head: bool) -> Architecture:
    from torch import nn

    from gazerm.model.reward_model import is_encoder

    model = _meta_model(ModelConfig.model_validate_json(config_json), lm_head)
    transformer = model.transformer
    hf = transformer.config
    heads = hf.num_attention_heads
    layer = next(
        m for m in transformer.modules() if isinstance(m, nn.ModuleList) and len(m) == hf.num_hidden_layers
    )[0]
    backbone = {id(p): p.numel() for p in model.backbone.parameters()}
    return Architecture(
        encoder=is_encoder(hf),
        hidden=hf.hidden_size,
        intermediate=getattr(hf, "intermediate_size", None) or 4 * hf.hidden_size,
        layers=hf.num_hidden_layers,
        heads=heads,
        kv_heads=getattr(hf, "num_key_value_heads", None) or heads,
        head_dim=getattr(hf, "head_dim", None) or hf.hidden_size // heads,
        vocab=hf.vocab_size,
        attention_dropout=getattr(hf, "attention_dropout", None)
        or getattr(hf, "attention_probs_dropout_prob", 0.0),
        hidden_dropout=getattr(hf, "hidden_dropout_prob", 0.0) or 0.0,
        backbone_params=sum(backbone.values()),
        head_params=sum(p.numel() for p in model.parameters() if id(p) not in backbone),
        layer_params=sum(p.numel() for p in layer.parameters()),
        embedding_params=transformer.get_input_embeddings().weight.numel(),
        linears=_linears(model.backbone),
        layer_linears=_linears(layer),
    )


def _linears(module: nn.Module) -> tuple[Linear, ...]:
    from torch import nn

    found = []
    for name, child in module.named_modules():
        if isinstance(child, nn.Linear):
            found.append(Linear(name, child.in_features, child.out_features))
        elif type(child).__name__ == "Conv1D":  # transformers' GPT-2 linear layer: weight (in, out)
            found.append(Linear(name, *child.weight.shape))
    return tuple(found)


def _meta_model(config: ModelConfig, lm_head: bool) -> nn.Module:
    """The reward model built on the ``meta`` device: every module and parameter shape, no memory.
    torch and transformers are imported here, not with the module: a driver whose architecture is cached,
    and a search's trials, whose drivers estimate nothing, never build a model."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    from gazerm.model.reward_model import RewardModel, build_reward_model, build_tokenizer

    with torch.device("meta"):
        if config.is_tiny:
            return build_reward_model(config, build_tokenizer(config), lm_head)
        backbone = (AutoModelForCausalLM if lm_head else AutoModel).from_config(_hf_config(config.backbone))
        return RewardModel(backbone, config)


@functools.lru_cache(maxsize=4)
def _hf_config(backbone: str) -> PretrainedConfig:
    """The backbone's transformers config (a GGUF file's takes seconds to parse: read once a process)."""
    from transformers import AutoConfig

    source = resolve_backbone(backbone)
    try:
        return AutoConfig.from_pretrained(source.path)
    except OSError as error:  # not on the hub, or the hub out of reach and the config not cached
        message = " ".join(str(error).split())
        raise ConfigError(f"model.backbone={backbone!r}: its config cannot be read: {message}") from error
