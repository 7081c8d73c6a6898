"""Write layers/modelshield/requirements.txt from pyproject.toml's runtime dependencies.

`sam build` reads only requirements.txt, so it is generated; tests/unit/test_packaging.py checks that the
committed file matches. Run `make requirements` after changing dependencies.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "layers" / "modelshield" / "requirements.txt"
HEADER = "# Generated from pyproject.toml by `make requirements`; do not edit.\n"


def render() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return HEADER + "".join(f"{dep}\n" for dep in sorted(project["dependencies"], key=str.lower))


if __name__ == "__main__":
    if "--check" in sys.argv:
        sys.exit(0 if TARGET.read_text() == render() else 1)
    TARGET.write_text(render())
    print(f"wrote {TARGET.relative_to(ROOT)}")
