"""PyTorch zip, TorchScript and legacy checkpoints: every pickle walked, tensor bytes never read."""

from __future__ import annotations

import io
import warnings
import zipfile

import pytest
from modelshield.models import Format, RuleId
from modelshield.scanning import scan_stream

from tests.corpus import pickle_family as corpus
from tests.corpus.pickle_family import globals_flagged, rules_of, scan_bytes


@pytest.mark.parametrize(
    ("make", "member"),
    [
        (corpus.torch_zip_evil_data_pkl, "archive/data.pkl"),
        (corpus.torch_zip_evil_member, "archive/extra/evil.pkl"),
        (corpus.torch_zip_evil_unnamed_member, "archive/extra/blob"),
    ],
    ids=["data.pkl", "extra .pkl member", "pickle without a .pkl name"],
)
def test_payload_in_any_pickle_member_is_found(make, member: str) -> None:
    # Given a torch zip with a malicious pickle under this name
    report = scan_bytes(make(), "model.pt")
    # Then it is flagged, located inside the archive
    assert report.format == Format.PYTORCH_ZIP
    hit = next(f for f in report.findings if f.rule == RuleId.CODE_EXEC)
    assert hit.location.startswith(f"model.pt!{member}@")


def test_duplicate_member_names_are_malformed() -> None:
    report = scan_bytes(corpus.torch_zip_duplicate_data_pkl(), "model.pt")
    assert any(f.rule == RuleId.MALFORMED and "duplicate" in f.message for f in report.findings)
    assert "os.system" in globals_flagged(report)


def test_broken_central_directory_falls_back_to_local_headers() -> None:
    # Given a checkpoint with an extra malicious member and its central directory cut off
    data = corpus.without_central_directory(corpus.torch_zip_evil_member())
    report = scan_bytes(data, "model.pt")
    # Then members are still found through their local headers (and the damage is reported)
    assert report.format == Format.PYTORCH_ZIP
    assert any(f.rule == RuleId.MALFORMED and "central directory" in f.message for f in report.findings)
    assert "os.system" in globals_flagged(report)


def test_tensor_data_is_not_read() -> None:
    import torch

    # Given a checkpoint holding 64 MiB of tensor data
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(16, 1024, 1024)}, buf)

    class CountingReader(io.BytesIO):
        read_bytes = 0

        def read(self, n: int | None = -1) -> bytes:
            out = super().read(n)
            CountingReader.read_bytes += len(out)
            return out

    reader = CountingReader(buf.getvalue())
    # When scanned (sha256 given, so only the scanners read)
    report = scan_stream(reader, "big.pt", sha256="0" * 64)
    # Then it is clean and well under 1 MiB was read
    assert not rules_of(report) & corpus.PROBLEM_RULES, report.findings
    assert report.metadata["tensor_bytes_not_read"] >= 64 << 20
    assert CountingReader.read_bytes < 1 << 20


def test_legacy_checkpoint_with_payload() -> None:
    report = scan_bytes(corpus.legacy_torch(corpus.global_os_system()), "old.pt")
    assert report.format == Format.PYTORCH_LEGACY
    assert "os.system" in globals_flagged(report)


def test_legacy_checkpoint_storages_are_accounted_for() -> None:
    # Given a real legacy checkpoint with bytes appended after its storages
    data = corpus.legacy_torch() + corpus.global_os_system()
    report = scan_bytes(data, "old.pt")
    # Then the trailing bytes are reported, and scanned
    assert any(f.rule == RuleId.MALFORMED and "after the last legacy" in f.message for f in report.findings)
    assert "os.system" in globals_flagged(report)


def test_legacy_checkpoint_truncated_inside_storages_is_incomplete() -> None:
    data = corpus.legacy_torch()
    report = scan_bytes(data[:-4], "old.pt")  # inside the last storage's bytes
    assert RuleId.SCAN_INCOMPLETE in rules_of(report)


def test_torchscript_custom_operator_and_file_access() -> None:
    code = (
        "def forward(self, x):\n    y = torch.ops.evil_ns.run(x)\n    return torch.from_file('/etc/passwd')\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = corpus.torchscript_with_code(code)
    report = scan_bytes(data, "ts.pt")
    assert report.format == Format.TORCHSCRIPT
    assert {RuleId.CODE_UNKNOWN, RuleId.CODE_EXEC} <= rules_of(report)


def test_zip_without_any_pickle_claiming_to_be_torch_is_malformed() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/version", "3")
    report = scan_bytes(buf.getvalue(), "fake.pt")
    assert report.format == Format.PYTORCH_ZIP
    assert RuleId.MALFORMED in rules_of(report)
