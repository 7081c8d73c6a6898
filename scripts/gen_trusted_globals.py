"""Generate the catalogue of what trusted ML libraries contain, for the pickle import judgement.

    .venv/bin/python scripts/gen_trusted_globals.py            # rewrites scanning/trusted_globals.json
    .venv/bin/python scripts/gen_trusted_globals.py --check    # exit 1 if the committed file is stale

Why generated: a pickle names `module.attribute` strings. Whether such a name only builds data depends on
what the attribute *is* in the library (a class, a Cython unpickle helper, a plain function, a constant)
and *where it is defined* (`pandas.read_pickle` lives in `pandas.io`). Those facts are in the installed
libraries, so this script imports each trusted package's modules (never a model file), looks at every
public and private attribute, and writes them down with the versions it saw. Nothing is listed by hand:
the rules that turn these facts into a verdict live in `modelshield.scanning.pickle_globals`, which is
also the single source of the dangerous surfaces that are skipped here (`DENY_MODULES`).

Each entry is `kind` (class | reconstructor | function | constant) plus, when the object could reach
outside the data, `risk`: the reason it must be denied even though its package is trusted (its
constructor or signature takes a path, a URL, a command or code; it is defined in a denied module).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import inspect
import io
import json
import pkgutil
import re
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "layers" / "modelshield"))

from modelshield.scanning.pickle_globals import (  # noqa: E402
    DENY_GLOBALS,
    DENY_MODULES,
    RECONSTRUCTOR_NAME,
    RISKY_PARAMETER,
    TRUSTED_PACKAGES,
)

OUT = REPO / "layers" / "modelshield" / "modelshield" / "scanning" / "trusted_globals.json"
# Modules we never import to catalogue: tests, build and vendored tooling. They are not trusted either:
# a name under them is judged as unknown.
SKIP_MODULE = re.compile(
    r"(^|\.)(tests?|testing|_testing|conftest|benchmarks?|_build_utils|_vendor|externals|_dynamo|_inductor|"
    r"_export|onnx|_functorch|compiler|utils\.benchmark|_lazy|testing\._internal|__main__|setup)(\.|$)"
)
_RISKY_BASES = (io.IOBase, threading.Thread)
# torch's C operator namespaces: `torch.tanh` is defined in torch._C._VariableFunctions, but these are
# tensor operations, not the bindings torch._C is denied for (TorchScript import, library loading).
_OPERATOR_NAMESPACES = ("torch._C._VariableFunctions", "torch._C._nn", "torch._C._linalg", "torch._C._fft",
                        "torch._C._special", "torch._C._nested", "torch._C._sparse")  # fmt: skip
KINDS = {"class": "c", "reconstructor": "r", "function": "f", "constant": "k"}


def distribution_of(package: str) -> str:
    return {"sklearn": "scikit-learn", "xgboost": "xgboost-cpu"}.get(package, package)


def denied_module(name: str) -> str | None:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in DENY_MODULES:
            return prefix
    return None


def iter_modules(package: str) -> list[Any]:
    """The package and every importable submodule outside denied surfaces and test code.

    A hand-rolled walk (pkgutil.walk_packages imports every package to recurse, denied ones included)."""
    found: list[Any] = []
    pending = [package]
    while pending:
        name = pending.pop()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(name)
        except BaseException:  # noqa: S112 - optional dependencies missing: not catalogued, so unknown
            continue
        found.append(module)
        for info in pkgutil.iter_modules(getattr(module, "__path__", None) or [], prefix=name + "."):
            if not (SKIP_MODULE.search(info.name) or denied_module(info.name)):
                pending.append(info.name)
    return found


def _parameters(obj: Any) -> list[str]:
    try:
        return list(inspect.signature(obj).parameters)
    except Exception:  # builtins without a text signature, odd descriptors
        return []


def risk_of(obj: Any, defined_in: str, key: str) -> str:
    """Why a name of a trusted package could still reach outside the data ('' when nothing is seen)."""
    where = None if defined_in.startswith(_OPERATOR_NAMESPACES) else denied_module(defined_in)
    if where:
        return f"is defined in {defined_in} ({DENY_MODULES[where]})"
    qualified = f"{defined_in}.{getattr(obj, '__qualname__', getattr(obj, '__name__', ''))}"
    for name in (qualified, key):
        if name in DENY_GLOBALS:
            return f"is denied as {name} ({DENY_GLOBALS[name]})"
    try:
        if isinstance(obj, type) and issubclass(obj, _RISKY_BASES):
            return f"is a subclass of {', '.join(b.__name__ for b in _RISKY_BASES if issubclass(obj, b))}"
    except TypeError:
        pass
    risky = [p for p in _parameters(obj) if RISKY_PARAMETER.search(p)]
    if risky:
        return f"takes {risky[0]!r}: a path, URL, command or code it would open, fetch or run"
    return ""


def kind_of(name: str, obj: Any) -> str | None:
    if isinstance(obj, type):
        return "class"
    if inspect.ismodule(obj):
        return None
    if callable(obj):
        return "reconstructor" if RECONSTRUCTOR_NAME.search(name) else "function"
    return "constant"


def catalogue(packages: dict[str, str]) -> dict[str, Any]:
    entries: dict[str, dict[str, str]] = {}

    def put(key: str, kind: str, risk: str) -> None:
        old = entries.get(key)
        if old is None or (risk and not old.get("risk")):
            entries[key] = {"kind": kind, **({"risk": risk} if risk else {})}

    for package in packages:
        for module in iter_modules(package):
            for attr, obj in list(vars(module).items()):
                if attr.startswith("__") and attr.endswith("__"):
                    continue
                try:
                    kind = kind_of(attr, obj)
                    if kind is None:
                        continue
                    defined_in = getattr(obj, "__module__", None) if kind != "constant" else module.__name__
                    qualname = getattr(obj, "__qualname__", None)
                except Exception:  # noqa: S112 - lazy attributes that fail on access are not catalogued
                    continue
                if not isinstance(defined_in, str):
                    defined_in = module.__name__
                key = f"{module.__name__}.{attr}"
                risk = risk_of(obj, defined_in, key)
                put(key, kind, risk)
                if kind != "constant" and isinstance(qualname, str) and defined_in.split(".")[0] == package:
                    put(f"{defined_in}.{qualname}", kind, risk)
    return dict(sorted(entries.items()))


def compact(entries: dict[str, dict[str, str]]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """{module: {attr: kind letter [+ index into risks]}}: the shape `pickle_globals` looks names up in."""
    risks: dict[str, int] = {}
    modules: dict[str, dict[str, str]] = {}
    for full, entry in entries.items():
        module, _, attr = full.rpartition(".")
        # nested qualnames (Class.Inner) are attributes of their defining module
        while module and module not in _MODULE_NAMES and "." in module:
            module, _, outer = module.rpartition(".")
            attr = f"{outer}.{attr}"
        code = KINDS[entry["kind"]]
        if "risk" in entry:
            code += str(risks.setdefault(entry["risk"], len(risks)))
        modules.setdefault(module, {})[attr] = code
    return modules, list(risks)


_MODULE_NAMES: set[str] = set()


def build() -> dict[str, Any]:
    versions: dict[str, str] = {}
    for package in TRUSTED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(distribution_of(package))
        except importlib.metadata.PackageNotFoundError:
            if package in sys.stdlib_module_names:
                versions[package] = f"python {sys.version.split()[0]}"
    entries = catalogue(versions)
    _MODULE_NAMES.update(sys.modules)
    modules, risks = compact(entries)
    return {
        "generated_by": "scripts/gen_trusted_globals.py (do not edit by hand)",
        "python": sys.version.split()[0],
        "versions": versions,
        "risks": risks,
        "globals": modules,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed catalogue is stale")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    data = build()
    text = json.dumps(data, indent=0, sort_keys=True, separators=(",", ":")) + "\n"
    if args.check:
        current = json.loads(args.out.read_text()) if args.out.exists() else {}
        if current.get("versions") != data["versions"] or current.get("globals") != data["globals"]:
            print(f"{args.out} is stale for the installed libraries: run scripts/gen_trusted_globals.py")
            return 1
        return 0
    args.out.write_text(text)
    counts: dict[str, int] = {}
    for attrs in data["globals"].values():
        for code in attrs.values():
            key = code[0] + ("/risky" if len(code) > 1 else "")
            counts[key] = counts.get(key, 0) + 1
    print(
        f"wrote {args.out.relative_to(REPO)}: {sum(counts.values())} names {counts} from {data['versions']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
