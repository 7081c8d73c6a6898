"""Links inside tar archives: resolved, refused only when they leave the archive or land on nothing."""

from __future__ import annotations

import io
import tarfile

import pytest
from modelshield.models import RuleId, Verdict
from modelshield.policy.engine import evaluate
from modelshield.policy.groups import content_safety_group
from modelshield.policy.metadata import ArtifactMetadata

from tests.corpus.formats import findings_of, safetensors_benign, scan_bytes


def tar_with(links: dict[str, tuple[str, bytes]], files: dict[str, bytes] | None = None) -> bytes:
    """files are regular members; links map name -> (kind 'sym'|'hard', target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in (files or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for name, (kind, target) in links.items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
            info.linkname = target.decode()
            t.addfile(info)
    return buf.getvalue()


WEIGHTS = {"model/v1/model.safetensors": safetensors_benign()}


@pytest.mark.parametrize(
    "links",
    [
        {"model/latest.safetensors": ("sym", b"v1/model.safetensors")},  # relative, same tree
        {"current": ("sym", b"model/v1")},  # a directory of the archive
        {"model/a": ("sym", b"b"), "model/b": ("sym", b"v1/model.safetensors")},  # a chain
        {"copy.safetensors": ("hard", b"model/v1/model.safetensors")},  # hard link: archive root
        {"model/v1/up": ("sym", b"../v1/./model.safetensors")},  # '..' that stays inside
    ],
    ids=["file", "directory", "chain", "hard link", "dot-dot inside"],
)
def test_links_that_stay_inside_the_archive_are_allowed(links) -> None:
    report = scan_bytes(tar_with(links, WEIGHTS), "bundle.tar")
    evaluation = evaluate(report, content_safety_group(), ArtifactMetadata())
    assert evaluation.verdict is Verdict.ALLOWED, report.findings
    assert set(report.metadata["archive_links"]) == set(links)


@pytest.mark.parametrize(
    ("links", "expected"),
    [
        ({"x": ("sym", b"/etc/passwd")}, "absolute"),
        ({"model/x": ("sym", b"../../etc/passwd")}, "leaves the archive"),
        ({"d": ("sym", b"."), "model/x": ("sym", b"../d/../../secret")}, "leaves the archive"),
        ({"up": ("sym", b"model/.."), "x": ("sym", b"up/../outside")}, "leaves the archive"),
        ({"x": ("sym", b"model/missing.bin")}, "not in the archive"),
        ({"a": ("sym", b"b"), "b": ("sym", b"a")}, "cycle"),
        ({"h": ("hard", b"../outside")}, "leaves the archive"),
        ({"w": ("sym", b"model\\v1\\model.safetensors")}, "backslash"),
    ],
    ids=[
        "absolute",
        "dot-dot out",
        "through a link to the root",
        "through a dir link",
        "dangling",
        "cycle",
        "hard link out",
        "backslash",
    ],
)
def test_links_that_leave_or_land_on_nothing_are_unsafe(links, expected: str) -> None:
    report = scan_bytes(tar_with(links, WEIGHTS), "evil.tar")
    messages = [f.message for f in findings_of(report, RuleId.ARCHIVE_UNSAFE)]
    assert any(expected in m for m in messages), messages
    assert not evaluate(report, content_safety_group(), ArtifactMetadata()).verdict.releases
