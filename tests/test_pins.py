"""pyproject.toml pins every dependency with ``==``, and environment.yml carries exactly the same pins."""

from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
EXTRAS_IN_ENV = ("book", "test")


def _project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf8"))["project"]


def _pins(lines):
    """{normalised name: version} of ``name==version`` requirement strings."""
    pins = {}
    for line in lines:
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version, f"not pinned with ==: {line}"
        name = canonicalize_name(req.name)
        assert name not in pins, f"listed twice: {line}"
        pins[name] = specs[0].version
    return pins


def _env_pip_lines():
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf8"))
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip: section"
    return env, pip_sections[0]


def test_every_pyproject_dependency_is_pinned():
    project = _project()
    _pins(project["dependencies"])
    for lines in project.get("optional-dependencies", {}).values():
        _pins(lines)


def test_environment_pins_equal_pyproject_pins():
    project = _project()
    extras = project["optional-dependencies"]
    expected = _pins(project["dependencies"] + [line for extra in EXTRAS_IN_ENV for line in extras[extra]])
    _, pip_lines = _env_pip_lines()
    assert "-e ." in pip_lines, "environment.yml must install svlib itself (-e .)"
    got = _pins([line for line in pip_lines if line != "-e ."])
    assert got == expected


def test_environment_python_and_pip():
    env, _ = _env_pip_lines()
    assert env["name"] == "svlib"
    conda_deps = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda_deps and "pip" in conda_deps
