"""The dashboard's vendored front-end files: check them, or fetch them again from the npm registry.

    python scripts/vendor_frontend.py           # check the committed files against VENDORED.json (offline)
    python scripts/vendor_frontend.py --fetch   # `npm pack` each pinned package, check the tarball's and
                                                # every file's sha256, then copy the files in

Pins (package@version, tarball and file sha256) live in dashboard/static/vendor/VENDORED.json: changing
a version means changing its hashes there too, in the same reviewed commit. Nothing is fetched at run time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VENDOR = Path(__file__).resolve().parents[1] / "layers/modelshield/modelshield/dashboard/static/vendor"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check() -> list[str]:
    problems = []
    for name, package in json.loads((VENDOR / "VENDORED.json").read_text()).items():
        for file, pin in package["files"].items():
            path = VENDOR / file
            if not path.is_file():
                problems.append(f"{path} is missing ({package['spec']}): run `make vendor`")
            elif sha256(path.read_bytes()) != pin["sha256"]:
                problems.append(f"{path} does not match its pin in VENDORED.json ({name})")
    return problems


def fetch() -> list[str]:
    problems = []
    npm = shutil.which("npm")
    if npm is None:
        return ["npm not found: install Node.js (it brings npm) to re-fetch the vendored files"]
    for name, package in json.loads((VENDOR / "VENDORED.json").read_text()).items():
        with tempfile.TemporaryDirectory() as tmp:
            out = (
                subprocess.run(  # noqa: S603 - a pinned spec from our own manifest
                    [npm, "pack", package["spec"], "--silent"],
                    cwd=tmp,
                    check=True,
                    capture_output=True,
                    text=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            tarball = Path(tmp) / out
            if sha256(tarball.read_bytes()) != package["tarball_sha256"]:
                problems.append(f"{package['spec']}: the registry's tarball does not match its pinned sha256")
                continue
            with tarfile.open(tarball) as archive:
                for file, pin in package["files"].items():
                    member = archive.extractfile(pin["from"])
                    data = member.read() if member else b""
                    if sha256(data) != pin["sha256"]:
                        problems.append(f"{package['spec']}: {pin['from']} does not match its pin")
                        continue
                    (VENDOR / file).write_bytes(data)
        print(f"{name}: {package['spec']} fetched and verified")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fetch", action="store_true", help="re-fetch from the npm registry, then check")
    args = parser.parse_args()
    problems = (fetch() if args.fetch else []) or check()
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print("vendored front-end files match their pins")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
