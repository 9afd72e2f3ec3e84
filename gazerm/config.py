"""Typed configs loaded from YAML, with ``key.path=value`` overrides from the command line."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

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


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set ``a.b.c=value`` paths in a nested dict; values parse as YAML (``0.1``, ``[1,2]``, ``true``)."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {override!r} is not of the form key.path=value")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {override!r}: '{part}' is not a section")
            node = child
        try:
            node[leaf] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            message = f"override {override!r}: the value is not valid YAML ({_yaml_problem(exc)})"
            raise ConfigError(message) from None
    return data


def override(path: str, value: Any) -> str:
    """A ``path=value`` override for ``load_config``; YAML keeps floats such as 1e-05 floats."""
    return f"{path}={yaml.safe_dump(value, default_flow_style=True)}"


def overrides_from(settings: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``load_config`` overrides from a mapping of dotted paths, nested sections or both (what a YAML file
    or ``--set a.b=1`` gives): ``{"run": {"seed": 1}, "model.fusion": "add"}`` → ``run.seed=1``,
    ``model.fusion=add``."""
    found = []
    for key, value in settings.items():
        path = f"{prefix}{key}"
        found += overrides_from(value, f"{path}.") if isinstance(value, Mapping) else [override(path, value)]
    return found


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
    model: type[ConfigT], source: str | Path | dict[str, Any], overrides: list[str] = ()
) -> ConfigT:
    """Build ``model`` from a YAML file (or an already-parsed dict) plus overrides; ``${VAR}`` in string
    values is the environment variable (``expand_env``).

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
            data = model.model_validate(data).model_dump(mode="json")
    data = apply_overrides(data, list(overrides))
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
