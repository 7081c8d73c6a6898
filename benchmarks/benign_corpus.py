"""False alarms on the full generated benign corpus (issue 14), counted into docs/scanner-comparison.md.

    KERAS_BACKEND=torch .venv/bin/python benchmarks/benign_corpus.py            # full size, writes the block
    KERAS_BACKEND=torch .venv/bin/python benchmarks/benign_corpus.py --size ci  # the `make test` subset

The corpus comes from tests/corpus/benign_catalog.py (the libraries' own catalogues: every scikit-learn
estimator in every pickle protocol and joblib compressor, every torch.nn module whole / state_dict /
TorchScript / quantized, keras layers, the ONNX wheel's models and operator test cases, pandas and NumPy
dtypes, XGBoost / LightGBM / CatBoost formats, archives). Each file is scanned in-process with the
built-in content-safety policy; the block between the markers lists counts per family, skipped catalogue
entries and every file that was not ALLOWED / ALLOWED_WITH_WARNINGS, with its first finding.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "layers" / "modelshield"))

from modelshield import scanning  # noqa: E402
from modelshield.models import Verdict  # noqa: E402
from modelshield.policy.engine import evaluate  # noqa: E402
from modelshield.policy.groups import content_safety_group  # noqa: E402
from modelshield.policy.metadata import ArtifactMetadata  # noqa: E402

from tests.corpus.benign_catalog import build  # noqa: E402

DOC = REPO / "docs" / "scanner-comparison.md"
BEGIN, END = "<!-- BEGIN GENERATED: benchmarks/benign_corpus.py -->", "<!-- END GENERATED: benign corpus -->"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("ci", "full"), default="full")
    parser.add_argument("--dest", type=Path, default=BENCH / ".data" / "benign_catalog")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave the docs alone")
    args = parser.parse_args()
    dest = args.dest / args.size
    shutil.rmtree(dest, ignore_errors=True)
    started = time.monotonic()
    cat = build(dest, args.size)
    built = time.monotonic() - started
    group = content_safety_group()
    verdicts: collections.Counter[str] = collections.Counter()
    flagged: list[str] = []
    started = time.monotonic()
    for item in cat.items:
        report = scanning.scan_path(dest / item.path, display_name=str(item.path))
        verdict = evaluate(report, group, ArtifactMetadata()).verdict
        verdicts[verdict.value] += 1
        if not verdict.releases:
            first = report.findings[0] if report.findings else None
            flagged.append(
                f"`{item.path}`: {verdict.value}"
                + (f" ({first.rule.value}: {first.message[:140]})" if first else "")
            )
    scanned = time.monotonic() - started
    counts = cat.counts()
    lines = [
        BEGIN,
        f"Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, size `{args.size}`: {len(cat.items)} files "
        f"generated in {built:.0f} s, scanned in {scanned:.0f} s. Command: "
        f"`KERAS_BACKEND=torch .venv/bin/python benchmarks/benign_corpus.py --size {args.size}`.",
        "",
        f"**False alarms (BLOCKED or ERROR): {len(flagged)} of {len(cat.items)}**; "
        + ", ".join(f"{v}: {verdicts[v.value]}" for v in Verdict if verdicts[v.value])
        + ".",
        "",
        "| family | files | catalogue entries skipped (could not be built with defaults) |",
        "| --- | ---: | ---: |",
        *(f"| {f} | {c['files']} | {c['skipped']} |" for f, c in sorted(counts.items())),
        "",
        "Library versions: " + ", ".join(f"{k} {v}" for k, v in sorted(cat.versions.items())) + ".",
        "",
        *(["Flagged files:", "", *(f"- {f}" for f in flagged[:50]), ""] if flagged else []),
        END,
    ]
    block = "\n".join(lines)
    print(block)
    if not args.no_doc:
        text = DOC.read_text()
        if BEGIN in text:
            head, _, rest = text.partition(BEGIN)
            _, _, tail = rest.partition(END)
            text = head + block + tail
        else:
            text = text.rstrip("\n") + "\n\n## The generated benign corpus (issue 14)\n\n" + block + "\n"
        DOC.write_text(text)
    return 1 if flagged else 0


if __name__ == "__main__":
    sys.exit(main())
