"""Packaging that fits a researcher's environment: pyproject.toml declares compatible ranges (installing the
package keeps an existing torch), constraints.txt pins the exact tested set, the ranges admit that set, and
`make setup` and CI install with the constraints; this environment is that set."""
from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
STACK = ("torch", "torchvision", "timm", "ray", "submitit", "mlflow")


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    return {canonicalize_name(r.name): r for r in reqs}


def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, pinned = line.partition("==")
            assert sep and pinned, f"constraints.txt pins exact versions only: {line}"
            pins[canonicalize_name(name)] = pinned
    return pins


@pytest.mark.parametrize("name", STACK)
def test_the_stack_is_a_range_in_pyproject_and_an_exact_pin_in_constraints(name: str):
    req = requirements()[name]
    assert not any(spec.operator in ("==", "===") for spec in req.specifier), f"{req}: declare a range"
    assert any(spec.operator == "<" for spec in req.specifier), f"{req}: give an upper bound (next major)"
    pinned = constraints()[name]
    assert req.specifier.contains(pinned, prereleases=True), f"constraints.txt {name}=={pinned} outside {req}"


def test_every_dependency_is_pinned_and_admitted_and_installed_as_pinned():
    pins = constraints()
    for name, req in requirements().items():
        assert name in pins, f"{name} is not in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} outside {req}"
    for name in STACK:
        try:
            installed = version(name)
        except PackageNotFoundError:
            pytest.skip(f"{name} is not installed here")
        assert installed.split("+")[0] == pins[name].split("+")[0], f"{name} {installed} != {pins[name]}"


def test_setup_and_ci_install_with_the_constraints():
    makefile = (REPO / "Makefile").read_text()
    installs = [line for line in makefile.splitlines() if re.search(r"pip install", line)]
    package = [line for line in installs if "-e " in line]
    assert package and all("-c constraints.txt" in line for line in package), package
    assert not any(re.search(r"torch==", line) for line in installs), "the pins belong in constraints.txt"
    assert re.search(r"^\$\(STAMP\):.*constraints\.txt", makefile, re.M), "a new pin must rebuild the venv"
    assert "make test" in (REPO / ".ci" / "run").read_text()  # CI goes through `make setup`
