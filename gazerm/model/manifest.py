"""A saved reward model directory's manifest (``gazerm.model.io`` has the layout): what a complete
directory holds, written last and checked before anything loads or publishes it.

Apart from ``io``'s weights so that what only checks a directory (the training driver publishing a
model, a Serve deployment choosing one) does not import torch, transformers and peft for it.
"""

from __future__ import annotations

import json
from pathlib import Path

from gazerm.cache import file_sha256
from gazerm.config import load_config
from gazerm.errors import ConfigError, PathNotFoundError
from gazerm.model.config import ModelConfig

FORMAT_VERSION = 1  # reward_model.json's format
MANIFEST_FILE = "model_manifest.json"
MANIFEST_FORMAT = 1


def required_parts(config: ModelConfig) -> list[str]:
    """The subdirectories a model directory of ``config`` must have: ``adapter/`` with LoRA,
    ``backbone/`` for tiny-* backbones and full fine-tuning (a frozen or LoRA hub backbone has none)."""
    parts = ["tokenizer/"]
    if config.lora is not None:
        parts.append("adapter/")
    if config.is_tiny or (config.lora is None and not config.frozen):
        parts.append("backbone/")
    return parts


def write_manifest(directory: str | Path, config: ModelConfig) -> Path:
    """Write ``model_manifest.json`` (every other file's size and sha256, the parts ``config`` needs);
    call it once everything else is written. Refuses a directory that lacks a needed part."""
    root = Path(directory)
    files = {
        file.relative_to(root).as_posix(): {"size": file.stat().st_size, "sha256": file_sha256(file)}
        for file in sorted(root.rglob("*"))
        if file.is_file() and file.name != MANIFEST_FILE
    }
    required = required_parts(config)
    missing = [part for part in required if not any(name.startswith(part) for name in files)]
    if missing:
        raise ConfigError(f"{root}: the model directory lacks {', '.join(missing)}; not sealing it")
    manifest = {"format": MANIFEST_FORMAT, "required": required, "files": files}
    (root / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return root / MANIFEST_FILE


def seal_model_dir(directory: str | Path) -> Path:
    """Write the manifest of a directory saved before manifests existed, once the parts its config needs
    are there. Its files' contents cannot be checked: only for a directory known to be complete."""
    return write_manifest(directory, load_config(ModelConfig, Path(directory) / "config.yaml"))


def verify_model_dir(directory: str | Path, hashes: bool = True) -> ModelConfig:
    """The directory's config once its manifest matches it: every listed file present with its size
    (and sha256 unless not ``hashes``), the parts its config needs present. One-line errors naming the
    path and what is missing or different."""
    src = Path(directory)
    if not (src / "reward_model.json").is_file():
        raise PathNotFoundError(f"{src}: not a saved reward model (no reward_model.json)")
    meta = json.loads((src / "reward_model.json").read_text())
    if meta.get("format") != FORMAT_VERSION:
        found = meta.get("format")
        raise ConfigError(f"{src}: reward model format {found}, this gazerm reads {FORMAT_VERSION}")
    manifest_file = src / MANIFEST_FILE
    if not manifest_file.is_file():
        raise PathNotFoundError(
            f"{src}: no {MANIFEST_FILE}: the model was not completely written, or was saved by a gazerm "
            "before model manifests: train it again, or seal one known to be complete with "
            "gazerm.model.manifest.seal_model_dir"
        )
    try:
        manifest = json.loads(manifest_file.read_text())
        files, required = dict(manifest["files"]), list(manifest["required"])
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{manifest_file}: not a readable model manifest ({error})") from error
    if manifest.get("format") != MANIFEST_FORMAT:
        found = manifest.get("format")
        raise ConfigError(f"{manifest_file}: manifest format {found}, expected {MANIFEST_FORMAT}")
    for name, entry in files.items():
        file = src / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ConfigError(f"{manifest_file}: lists {name}, outside the model directory")
        if not file.is_file():
            raise PathNotFoundError(f"{src}: {name} is missing (listed in {MANIFEST_FILE})")
        if file.stat().st_size != entry["size"]:
            raise ConfigError(
                f"{src}: {name} has {file.stat().st_size} bytes, {MANIFEST_FILE} says {entry['size']}"
            )
        if hashes and file_sha256(file) != entry["sha256"]:
            raise ConfigError(f"{src}: {name} does not match its sha256 in {MANIFEST_FILE}")
    config = load_config(ModelConfig, src / "config.yaml")
    for part in dict.fromkeys([*required, *required_parts(config)]):
        if not any(name.startswith(part) for name in files) or not (src / part).is_dir():
            raise PathNotFoundError(f"{src}: {part} is missing, and the model's config needs it")
    return config
