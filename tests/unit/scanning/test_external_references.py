"""The next classes of attack: what a loader reads from outside the file (issue 14 item 4)."""

from __future__ import annotations

import pytest
from modelshield.models import RuleId, Verdict
from modelshield.policy.engine import evaluate
from modelshield.policy.groups import content_safety_group
from modelshield.policy.metadata import ArtifactMetadata

from tests.corpus import formats as corpus
from tests.corpus.formats import findings_of, scan_bytes


def _blocked(report) -> bool:
    return not evaluate(report, content_safety_group(), ArtifactMetadata()).verdict.releases


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (corpus.keras_lookup_vocabulary_path(), "reads the file '/etc/passwd'"),
        (corpus.keras_fetched_file(), "fetches 'https://attacker.example/vocab.txt'"),
    ],
    ids=["vocabulary path", "fetched vocabulary"],
)
def test_keras_layers_that_read_outside_the_model_are_findings_with_location(
    data: bytes, needle: str
) -> None:
    report = scan_bytes(data, "model.keras")
    found = findings_of(report, RuleId.ARCHIVE_UNSAFE)
    assert any(needle in f.message for f in found), report.findings
    assert all(f.location.startswith("model.keras!config.json") for f in found)
    assert _blocked(report)


@pytest.mark.parametrize(
    ("kind", "obj", "needle"),
    [
        ("external-link", "/model_weights/dense/bias", "external link to '/mnt/shared/evil.h5:/payload'"),
        ("external-storage", "/model_weights/dense/bias", "external file(s) '/etc/shadow'"),
        ("virtual-dataset", "/model_weights/virtual", "is a virtual dataset"),
    ],
)
def test_hdf5_objects_that_read_other_files_are_findings_with_their_path(
    kind: str, obj: str, needle: str
) -> None:
    # Given a Keras .h5 written by h5py whose weights reach outside the file
    report = scan_bytes(corpus.h5_keras_with(kind), "model.h5")
    # Then the object is named, with what it reads, and the model is blocked
    found = findings_of(report, RuleId.ARCHIVE_UNSAFE)
    assert [f.detail["object"] for f in found] == [obj], report.findings
    assert needle in found[0].message and found[0].detail["kind"] == kind
    assert _blocked(report)


def test_hdf5_soft_links_and_many_groups_are_not_external() -> None:
    report = scan_bytes(corpus.h5_keras_with("soft-links"), "model.h5")
    assert not findings_of(report, RuleId.ARCHIVE_UNSAFE) and not _blocked(report), report.findings


def test_hdf5_links_the_walk_cannot_read_fail_closed() -> None:
    # Given a group whose links live in dense storage (a fractal heap the walker does not read)
    report = scan_bytes(corpus.h5_keras_with("dense-links"), "model.h5")
    # Then the scan says which group it could not check, and does not release the model
    (incomplete,) = findings_of(report, RuleId.SCAN_INCOMPLETE)
    assert "/model_weights (links in dense storage) was not walked" in incomplete.message
    assert _blocked(report)


def test_an_inline_vocabulary_is_not_an_external_reference() -> None:
    lookup = corpus.keras_layer("StringLookup", {"name": "lookup", "vocabulary": ["a", "b"]})
    report = scan_bytes(corpus.keras_zip(corpus.keras_sequential(lookup)), "model.keras")
    assert not findings_of(report, RuleId.ARCHIVE_UNSAFE), report.findings


def test_auto_map_in_a_hugging_face_config_is_custom_code() -> None:
    report = scan_bytes(corpus.hf_config_auto_map(), "config.json")
    (finding,) = findings_of(report, RuleId.CODE_UNKNOWN)
    assert "modeling_evil.EvilModel" in finding.message and "trust_remote_code" in finding.message
    assert _blocked(report)


def test_a_model_repository_shipping_python_is_flagged_where_the_code_is() -> None:
    report = scan_bytes(corpus.model_repo_with_remote_code(), "repo.tar")
    locations = {f.location for f in findings_of(report, RuleId.CODE_UNKNOWN)}
    assert "repo.tar!repo/config.json" in locations
    assert "repo.tar!repo/modeling_evil.py" in locations
    assert evaluate(report, content_safety_group(), ArtifactMetadata()).verdict is Verdict.BLOCKED


def test_a_plain_config_json_and_a_readme_are_still_clean() -> None:
    clean = scan_bytes(b'{"architectures": ["BertModel"], "model_type": "bert"}', "config.json")
    readme = scan_bytes(b"# Model\n\nimport this model with `from_pretrained`.\n", "README.md")
    assert clean.findings == [] and readme.findings == []


def test_7z_is_refused_with_a_precise_message() -> None:
    report = scan_bytes(b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 40, "weights.7z")
    (finding,) = findings_of(report, RuleId.SCAN_INCOMPLETE)
    assert "7z archive" in finding.message and "repack" in finding.message
