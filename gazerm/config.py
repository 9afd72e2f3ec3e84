"""Typed configs loaded from YAML, with typed ``{"key.path": value}`` overrides (from the command line's
``--set key.path=value``, parsed once)."""

from __future__ import annotations

import contextlib
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, SerializationInfo, ValidationError

from gazerm.errors import ConfigError

ConfigT = TypeVar("ConfigT", bound=BaseModel)

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class StrictConfig(BaseModel):
    """The base of every gazerm config: an unknown field is an error, and so is a NaN or infinite number
    (YAML ``.nan``, ``--set lr=inf``), refused rather than trained with."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def expand_env(data: Any, origin: str = "<config>") -> Any:
    """``${VAR}`` in every string value replaced by the environment variable, so a job can point at data
    whose place differs per machine (``path: ${GAZERM_IFLLM_DIR}``); an unset variable is a ConfigError
    naming it. Keys and non-string values are left as they are."""
    if isinstance(data, dict):
        return {key: expand_env(value, origin) for key, value in data.items()}
    if isinstance(data, list):
        return [expand_env(value, origin) for value in data]
    if not isinstance(data, str):
        return data

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(
                f"{origin}: environment variable {name} is not set (the config uses ${{{name}}})"
            )
        return os.environ[name]

    return _VARIABLE.sub(value, data)


# Not OmegaConf's dotlist merge (torchtune's route): it merges a mapping into a dict-valued field
# (data.prepare.splits) instead of replacing it and reads ``${VAR}`` as its own interpolation; setting a
# path in the dumped config and validating it again is the few lines below.
def parse_overrides(settings: Sequence[str]) -> dict[str, Any]:
    """The command line's ``--set a.b.c=value`` strings as ``{"a.b.c": value}``; values parse as YAML
    (``0.1``, ``[1,2]``, ``true``). Overrides apply in order, so a key given twice is where and as its
    last ``--set`` gives it. The only place gazerm reads an override from a string."""
    parsed = {}
    for setting in settings:
        key, sep, raw = setting.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {setting!r} is not of the form key.path=value")
        parsed.pop(key, None)
        try:
            parsed[key] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            message = f"override {setting!r}: the value is not valid YAML ({_yaml_problem(exc)})"
            raise ConfigError(message) from None
    return parsed


def path_problem(model: type[BaseModel], path: str) -> str | None:
    """Why ``path`` (``model.lora.r``) names no field of ``model``, or None. Below a dict-valued field
    (``data.prepare.splits.train``) any key is a path."""
    return _field(model, path)[1]


def mapping_above(model: type[BaseModel], path: str) -> str | None:
    """The dict-valued field that ``path`` is a key inside (``data.prepare.splits`` for
    ``data.prepare.splits.train``), or None."""
    parts = path.split(".")
    prefixes = (".".join(parts[:end]) for end in range(1, len(parts)))
    return next((prefix for prefix in prefixes if _field(model, prefix)[0] is dict), None)


def _field(model: type[BaseModel], path: str) -> tuple[Any, str | None]:
    """What the field at ``path`` holds (``_section``'s answer), or why there is no such field."""
    section: Any = model
    parts = path.split(".")
    for index, part in enumerate(parts):
        if section is dict:
            return None, None
        if section is None:
            return None, f"{'.'.join(parts[:index])!r} is not a section"
        if part not in section.model_fields:
            return None, f"{section.__name__} has no field {part!r}"
        section = _section(section.model_fields[part].annotation)
    return section, None


def _section(annotation: Any) -> type[BaseModel] | type[dict] | None:
    """What a field holds, ``X | None`` unwrapped: a config class, ``dict`` (a mapping) or None (a value)."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    for candidate in typing.get_args(annotation) if union else (annotation,):
        if (typing.get_origin(candidate) or candidate) in (dict, Mapping):
            return dict
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


# The serialization context ``with_overrides`` and ``load_config`` dump a config with before applying
# overrides: fields a fidelity switch fills and the config did not set are left out, so an override of the
# switch (``--set model.fidelity=reference``) moves them too. Every other dump is complete.
_OMIT = "omit_implied"
OMIT_IMPLIED = {_OMIT: True}


def left_to_switch(
    data: dict[str, Any], config: BaseModel, switched: Mapping[str, Any], info: SerializationInfo
) -> dict[str, Any]:
    """``data`` (a dump of ``config``) less, when dumped for overrides (``OMIT_IMPLIED``), the fields of
    ``switched`` that the config left to its fidelity switch."""
    if not (info.context or {}).get(_OMIT):
        return data
    return {
        key: value for key, value in data.items() if key not in switched or key in config.model_fields_set
    }


def with_overrides(config: ConfigT, overrides: Mapping[str, Any]) -> ConfigT:
    """``config`` with each dotted path set to its typed value (``{"run.seed": 1}``), validated again as a
    whole: a path that names no field, or a value the config refuses, is a ConfigError naming it."""
    dumped = config.model_dump(mode="json", context=OMIT_IMPLIED)
    return _validated(type(config), _overridden(type(config), dumped, overrides))


def _overridden(model: type[BaseModel], data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` (a dump of ``model``) with the overrides set. A mapping given for a config section sets its
    fields one by one (``{"run": {"seed": 1}}`` keeps the other run settings); for a dict-valued field it
    replaces the dict. A section that is None (``model.lora``) starts from its defaults."""
    for path, value in overrides.items():
        section, problem = _field(model, path)
        if problem:
            raise ConfigError(f"override {path}: {problem}")
        if isinstance(value, Mapping) and section not in (None, dict):
            _overridden(model, data, {f"{path}.{key}": item for key, item in value.items()})
            continue
        node = data
        *parents, leaf = path.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value
    return data


def output_dir_problem(path: str) -> str | None:
    """Why a local output directory cannot be written (it, or a folder above it, is an existing file), or
    None; an object-store URI (``s3://...``) is left to the store."""
    if "://" in path:
        return None
    for candidate in (Path(path), *Path(path).parents):
        if candidate.exists() and not candidate.is_dir():
            what = "is" if candidate == Path(path) else f"is inside {candidate}, which is"
            return f"{path} {what} an existing file, not a directory"
    return None


def _writable_output_dir(path: str) -> str:
    problem = output_dir_problem(path)
    if problem:
        raise ValueError(problem)
    return path


# A config field naming a directory gazerm writes: refused when it (or a folder above it) is a file.
OutputDir = Annotated[str, AfterValidator(_writable_output_dir)]


def check_unique(kind: str, names: Sequence[Any]) -> None:
    """A config validator's check that names (stages, rows, seeds) repeat nowhere: ValueError listing those
    that do."""
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"duplicate {kind}(s) {repeated}")


def load_config(
    model: type[ConfigT], source: str | Path | dict[str, Any], overrides: Mapping[str, Any] | None = None
) -> ConfigT:
    """Build ``model`` from a YAML file (or an already-parsed dict) plus typed overrides (``with_overrides``'
    ``{"a.b": value}``); ``${VAR}`` in string values is the environment variable (``expand_env``).

    Overrides land on the config *with its defaults filled in*, so ``--set data.prepare.gaze.backend=local``
    changes one field of the default ``data.prepare`` section instead of replacing the whole section.
    """
    if isinstance(source, dict):
        data, origin = dict(source), "<config>"
    else:
        data, origin = read_yaml(Path(source)), str(source)
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping of settings (key: value), got a {_kind(data)}")
    data = expand_env(data, origin)
    if overrides:
        with contextlib.suppress(ValidationError):  # an invalid file is reported below, overrides applied
            data = model.model_validate(data).model_dump(mode="json", context=OMIT_IMPLIED)
        data = _overridden(model, data, overrides)
    return _validated(model, data, origin)


def _validated(model: type[ConfigT], data: dict[str, Any], origin: str = "<config>") -> ConfigT:
    """``model`` from ``data``; its validation errors as one ConfigError naming ``origin`` and each field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(f"{origin}: {problems}") from exc


def read_yaml(path: Path) -> Any:
    """A YAML file's content ({} for an empty file); a file that is missing, a directory, not UTF-8 or not
    YAML is a ConfigError naming it (and the line, for a syntax error)."""
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML (nested too deeply)") from None
    return {} if data is None else data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (1-based line and column)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def _kind(data: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(data), type(data).__name__
    )


def dump_config(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
