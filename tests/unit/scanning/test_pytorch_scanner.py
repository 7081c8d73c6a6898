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


# -- the shared zip reader: checkpoints get every structural check a generic zip gets ---------------------


def test_real_checkpoint_central_directory_is_read_despite_its_zip64_end_record() -> None:
    import time

    import torch
    from modelshield.scanning.registry import Limits, ScanContext
    from modelshield.scanning.zips import read_zip

    # Given torch.save output (it always writes a zip64 end record, even for tiny files)
    buf = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buf)
    ctx = ScanContext(Limits(), "small.pt")
    ctx.shared.deadline = time.monotonic() + 60
    # When its structure is read
    listing = read_zip(buf, ctx)
    # Then the central directory is used (not the local-header fallback) and nothing is reported
    assert listing.central and listing.prefix == 0
    assert "archive/data.pkl" in {e.name for e in listing.entries}
    assert not ctx.shared.findings


def test_checkpoint_member_escaping_the_extraction_directory_is_unsafe() -> None:
    # Given a checkpoint with an extra member named to escape the directory it is extracted to
    data = corpus.torch_zip_with_member("../../evil.pkl", corpus.global_os_system())
    # When scanned
    report = scan_bytes(data, "model.pt")
    # Then the name is unsafe and the payload is still found
    assert report.format == Format.PYTORCH_ZIP
    assert RuleId.ARCHIVE_UNSAFE in rules_of(report)
    assert "os.system" in globals_flagged(report)


def test_member_hidden_from_the_central_directory_of_a_checkpoint_is_scanned() -> None:
    import struct

    # Given a checkpoint whose central directory omits its last member (a pickle payload)
    data = corpus.torch_zip_evil_member()
    eocd = data.rfind(b"PK\x05\x06")
    total, _cd_size, cd_offset = struct.unpack("<HII", data[eocd + 10 : eocd + 20])
    last_entry = data.rfind(b"PK\x01\x02", cd_offset, eocd)
    new_eocd = bytearray(data[eocd:])
    struct.pack_into("<HHI", new_eocd, 8, total - 1, total - 1, last_entry - cd_offset)
    hidden = data[:last_entry] + bytes(new_eocd)
    # When scanned
    report = scan_bytes(hidden, "model.pt")
    # Then the unlisted member is reported, and its payload found
    assert any(f.rule == RuleId.MALFORMED and "not listed" in f.message for f in report.findings)
    assert "os.system" in globals_flagged(report)


def test_declared_bomb_member_in_a_checkpoint_is_not_inflated() -> None:
    # Given a checkpoint with a 64 MiB member of zeros deflated ~1000x
    buf = io.BytesIO(corpus.torch_state_dict_zip())
    with zipfile.ZipFile(buf, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/extra/blob", bytes(64 << 20))
    # When scanned
    report = scan_bytes(buf.getvalue(), "model.pt")
    # Then it is a bomb and not scanned (fail closed)
    assert {RuleId.ARCHIVE_UNSAFE, RuleId.SCAN_INCOMPLETE} <= rules_of(report)
