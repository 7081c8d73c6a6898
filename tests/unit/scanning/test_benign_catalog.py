"""Every file the ML libraries' own catalogues produce scans ALLOWED (issue 14: no false alarms).

The corpus is generated, not picked: tests/corpus/benign_catalog.py walks scikit-learn's
all_estimators(), torch.nn, keras.layers, the ONNX models the onnx wheel ships, every pandas / NumPy
dtype and each XGBoost / LightGBM / CatBoost save format. This is the CI-sized subset (`size="ci"`); the
full one runs in `make bench` (benchmarks/benign_corpus.py). Generated once per session under tmp.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from modelshield import scanning
from modelshield.models import RuleId, Verdict
from modelshield.policy.engine import evaluate
from modelshield.policy.groups import content_safety_group
from modelshield.policy.metadata import ArtifactMetadata

from tests.corpus.benign_catalog import Catalog, build

FAMILIES = ("sklearn", "gbm", "pandas", "torch", "keras", "onnx", "gguf", "safetensors", "numpy",
            "tokenizers", "archives")  # fmt: skip


@pytest.fixture(scope="session")
def benign_corpus(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    return build(tmp_path_factory.mktemp("benign-catalog"), size="ci")


def test_the_corpus_covers_every_catalogue_with_few_skips(benign_corpus: Catalog) -> None:
    # Given the generated CI corpus
    counts = benign_corpus.counts()
    # Then it has hundreds of files, from every family, and skipped entries stay a small minority
    assert len(benign_corpus.items) >= 800, counts
    for family in FAMILIES:
        assert counts.get(family, {}).get("files", 0) > 0, (family, counts, benign_corpus.skipped)
    assert counts["sklearn"]["files"] >= 180 * 2  # every fitted estimator: a pickle and a joblib variant
    assert counts["sklearn"]["skipped"] <= 10, [s for s in benign_corpus.skipped if s[0] == "sklearn"]
    assert counts["torch"]["files"] >= 300


def _problems(root: Path, rel: Path) -> str | None:
    report = scanning.scan_path(root / rel, display_name=str(rel))
    evaluation = evaluate(report, content_safety_group(), ArtifactMetadata())
    if evaluation.verdict.releases:
        return None
    findings = "; ".join(f"{f.rule.value} {f.location}: {f.message[:160]}" for f in report.findings[:4])
    return f"{rel}: {evaluation.verdict.value}: {findings}"


def test_every_generated_benign_file_is_allowed(benign_corpus: Catalog) -> None:
    # When every generated file is scanned with the built-in content-safety policy
    failures = [p for item in benign_corpus.items if (p := _problems(benign_corpus.root, item.path))]
    # Then none is blocked or in error (warnings allowed), and any failure shows its findings
    assert not failures, f"{len(failures)} of {len(benign_corpus.items)} benign files flagged:\n" + "\n".join(
        failures
    )


def test_warnings_are_only_unreviewed_data_references(benign_corpus: Catalog) -> None:
    # Given the scanned corpus, the non-blocking findings that remain
    sample = [i for i in benign_corpus.items if i.family in ("sklearn", "torch")][::7]
    rules = set()
    for item in sample:
        report = scanning.scan_path(benign_corpus.root / item.path)
        verdict = evaluate(report, content_safety_group(), ArtifactMetadata()).verdict
        if verdict is Verdict.ALLOWED_WITH_WARNINGS:
            rules |= {f.rule for f in report.findings}
    # Then they are data references (a library function named as a value), never code findings
    assert rules <= {RuleId.DATA_REFERENCE}, rules
