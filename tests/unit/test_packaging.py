"""The Lambda layer's requirements.txt is generated from pyproject.toml and must agree with it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_layer_requirements_match_pyproject() -> None:
    # Given the runtime dependencies declared in pyproject.toml
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    # When reading the committed layer requirements
    lines = (ROOT / "layers/modelshield/requirements.txt").read_text().splitlines()
    pinned = {line for line in lines if line and not line.startswith("#")}
    # Then they are the same set, and the generator agrees byte for byte
    assert pinned == declared
    check = subprocess.run([sys.executable, "scripts/gen_requirements.py", "--check"], cwd=ROOT, check=False)
    assert check.returncode == 0


def test_runtime_dependencies_are_pinned_exactly() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert all("==" in dep for dep in deps), deps


def test_every_function_handler_exists_where_the_template_says() -> None:
    from modelshield.local.template import load_template

    template = load_template(ROOT / "template.yaml")
    functions = {k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::Serverless::Function"}
    assert functions
    for logical, resource in functions.items():
        props = resource["Properties"]
        module, _, attr = props["Handler"].rpartition(".")
        source = ROOT / props["CodeUri"] / f"{module}.py"
        assert source.is_file(), f"{logical}: {source} missing"
        assert f"def {attr}(" in source.read_text() or f"{attr} =" in source.read_text()
