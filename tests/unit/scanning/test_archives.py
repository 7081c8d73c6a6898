"""Zip, tar and compressed streams: every member scanned by content, every trick of the container reported."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zipfile

import pytest
from modelshield.models import Format, RuleId, Severity
from modelshield.scanning.compressed import compression_kind
from modelshield.scanning.registry import registered_formats
from modelshield.scanning.streams import SubStream, path_problem

from tests.corpus import formats as corpus
from tests.corpus.formats import findings_of, problem_rules, rules_of, scan_bytes

# -- benign ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("container", ["zip", "tar"])
def test_benign_archive_of_recognised_files_is_clean(container: str) -> None:
    # Given a model directory (model card, JSON configs, safetensors) packed as zip or tar
    members = corpus.benign_archive_members()
    data = corpus.zip_of(members) if container == "zip" else corpus.tar_of(members)
    # When it is scanned
    report = scan_bytes(data, f"model.{container}")
    # Then every member was detected by content and nothing is reported
    assert report.format == Format(container)
    assert not rules_of(report) & problem_rules(), report.findings
    assert report.metadata["formats"].count("text") == 3
    assert "safetensors" in report.metadata["formats"]
    assert report.metadata["license"] == "apache-2.0"  # from the model card inside


def test_stored_and_deflated_members_are_both_scanned() -> None:
    # Given the same malicious template config stored in one zip and deflated in another
    member = {"tokenizer_config.json": corpus.tokenizer_config(corpus.SSTI_TEMPLATE)}
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        # When each is scanned
        report = scan_bytes(corpus.zip_of(member, compression=compression), "m.zip")
        # Then the member's content is analysed and located inside the archive
        hits = findings_of(report, RuleId.CODE_EXEC)
        assert hits, compression
        assert hits[0].location == "m.zip!tokenizer_config.json"


def test_members_in_nested_directories_get_full_locations() -> None:
    # Given a zip holding a tar holding a gzip of an evil pickle
    inner_tar = corpus.tar_of({"deep/dir/evil.pkl.gz": gzip.compress(corpus.EVIL_PICKLE)})
    data = corpus.zip_of({"bundle.tar": inner_tar})
    # When scanned
    report = scan_bytes(data, "outer.zip")
    # Then the payload is found and its location walks the containers
    hit = findings_of(report, RuleId.CODE_EXEC)[0]
    assert hit.location.startswith("outer.zip!bundle.tar!deep/dir/evil.pkl.gz!<decompressed>")
    assert report.metadata["formats"][:4] == ["zip", "tar", "compressed", "pickle"]


# -- zip tricks --------------------------------------------------------------------------------------------


def test_zip_path_traversal_and_absolute_names_are_critical() -> None:
    report = scan_bytes(corpus.zip_traversal(), "evil.zip")
    unsafe = findings_of(report, RuleId.ARCHIVE_UNSAFE)
    messages = " ".join(f.message for f in unsafe)
    assert "'../../evil.txt'" in messages and "'/etc/cron.d/evil'" in messages
    assert {f.severity for f in unsafe} == {Severity.CRITICAL}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a/../../b", Severity.CRITICAL),
        ("C:\\Windows\\evil.dll", Severity.CRITICAL),
        ("..\\evil", Severity.CRITICAL),
        ("dir\\file", Severity.HIGH),
        ("nul\x00byte", Severity.HIGH),
        ("model/weights.safetensors", None),
        ("..data/ok", None),
    ],
)
def test_path_problem_classifies_member_names(name: str, expected: Severity | None) -> None:
    problem = path_problem(name)
    assert (problem[1] if problem else None) == expected


def test_zip_symlink_member_is_unsafe() -> None:
    report = scan_bytes(corpus.zip_symlink(), "link.zip")
    assert any("symbolic link" in f.message for f in findings_of(report, RuleId.ARCHIVE_UNSAFE))


def test_duplicate_zip_names_are_unsafe() -> None:
    report = scan_bytes(corpus.zip_duplicate_names(), "dup.zip")
    assert any("duplicate" in f.message for f in findings_of(report, RuleId.ARCHIVE_UNSAFE))


def test_zip_bomb_by_declared_ratio_is_not_inflated() -> None:
    # Given 20 MiB of zeros deflated into ~20 KiB, and a ratio limit of 100
    data = corpus.zip_bomb()
    # When scanned
    report = scan_bytes(data, "bomb.zip", max_ratio=100)
    # Then it is a bomb, and the member is reported as not scanned (fail closed)
    assert any("bomb" in f.message for f in findings_of(report, RuleId.ARCHIVE_UNSAFE))
    assert findings_of(report, RuleId.SCAN_INCOMPLETE)


def test_zip_that_lies_about_its_size_is_stopped_while_inflating() -> None:
    # Given a deflated bomb whose headers claim a tiny uncompressed size (so the declared ratio looks fine)
    data = bytearray(corpus.zip_bomb(4 * 1024 * 1024))
    for sig, field in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = data.find(sig)
        struct.pack_into("<I", data, pos + field, 1000)
    # When scanned
    report = scan_bytes(bytes(data), "liar.zip")
    # Then inflating stops at the declared size and says so
    assert any("declared size" in f.message for f in findings_of(report, RuleId.MALFORMED))
    assert findings_of(report, RuleId.SCAN_INCOMPLETE)


def test_total_uncompressed_budget_is_artifact_wide() -> None:
    # Given two members of 3 MiB each and an artifact budget of 4 MiB
    members = {"a.txt": b"a" * (3 << 20), "b.txt": b"b" * (3 << 20)}
    # When scanned
    report = scan_bytes(corpus.zip_of(members), "two.zip", max_uncompressed_bytes=4 << 20, max_ratio=1e9)
    # Then the second member trips the budget
    assert any(
        "decompressed in this artifact" in f.message for f in findings_of(report, RuleId.ARCHIVE_UNSAFE)
    )
    assert findings_of(report, RuleId.SCAN_INCOMPLETE)


def test_overlapping_entries_are_reported() -> None:
    report = scan_bytes(corpus.zip_overlapping(), "overlap.zip")
    assert any("overlap" in f.message for f in findings_of(report, RuleId.ARCHIVE_UNSAFE))


def test_central_and_local_name_mismatch_is_malformed() -> None:
    report = scan_bytes(corpus.zip_name_mismatch(), "mismatch.zip")
    hit = [f for f in findings_of(report, RuleId.MALFORMED) if "local header" in f.message]
    assert hit and hit[0].detail == {"central": "safe.txt", "local": "evil.pkl"}


def test_missing_central_directory_falls_back_to_local_headers() -> None:
    # Given a zip cut before its central directory, with an evil pickle as the second member
    data = corpus.zip_without_central_directory()
    # When scanned
    report = scan_bytes(data, "cut.zip")
    # Then the fallback is reported and still finds the payload a streaming unzipper would extract
    assert any("central directory" in f.message for f in findings_of(report, RuleId.MALFORMED))
    assert any(f.location.startswith("cut.zip!evil.pkl") for f in findings_of(report, RuleId.CODE_EXEC))


class Unseekable(io.RawIOBase):
    """A write-only sink: zipfile must then put member sizes in data descriptors after the data."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.buf += b
        return len(b)


def test_streamed_zip_with_data_descriptors_is_walked_by_local_headers() -> None:
    # Given a zip written to a non-seekable stream (sizes only in data descriptors), central directory cut off
    sink = Unseekable()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as z:  # type: ignore[arg-type]
        with z.open("a.json", "w") as f:
            f.write(b'{"x": 1}')
        with z.open("evil.pkl", "w") as f:
            f.write(corpus.EVIL_PICKLE)
    data = bytes(sink.buf)
    data = data[: data.find(b"PK\x01\x02")]
    # When scanned
    report = scan_bytes(data, "stream.zip")
    # Then both members were found by inflating to the end of each deflate stream
    assert {"text", "pickle"} <= set(report.metadata["formats"])
    assert any(f.location.startswith("stream.zip!evil.pkl") for f in findings_of(report, RuleId.CODE_EXEC))


@pytest.mark.parametrize("force_zip64", [False, True], ids=["32-bit descriptors", "zip64 descriptors"])
def test_stored_members_with_data_descriptors_are_walked_by_local_headers(force_zip64: bool) -> None:
    # Given stored members written to a non-seekable stream (sizes only in the data descriptors that follow
    # the data: a stored member has no end marker), central directory cut off
    sink = Unseekable()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as z:  # type: ignore[arg-type]
        for name, body in (("a.json", b'{"x": 1}'), ("evil.pkl", corpus.EVIL_PICKLE), ("b.json", b"[]")):
            with z.open(name, "w", force_zip64=force_zip64) as f:
                f.write(body)
    data = bytes(sink.buf)
    data = data[: data.find(b"PK\x01\x02")]
    # When scanned
    report = scan_bytes(data, "stream.zip")
    # Then every member was found by its descriptor, the payload too, and nothing is left unscanned
    assert report.metadata["archive_members"] == 3
    assert any(f.location.startswith("stream.zip!evil.pkl") for f in findings_of(report, RuleId.CODE_EXEC))
    assert not findings_of(report, RuleId.SCAN_INCOMPLETE)


def test_data_prepended_to_a_zip_is_scanned_as_its_own_file() -> None:
    # Given an evil pickle with a valid zip appended (a pickle/zip polyglot)
    report = scan_bytes(corpus.zip_with_prefix(), "poly.zip")
    # Then the prefix is reported and scanned
    assert report.format == Format.ZIP
    assert any("before the first" in f.message for f in findings_of(report, RuleId.MALFORMED))
    assert any(f.location.startswith("poly.zip!<prefix>") for f in findings_of(report, RuleId.CODE_EXEC))


def test_local_header_hidden_between_listed_members_is_found() -> None:
    # Given a zip whose central directory omits its second member
    data = corpus.zip_of({"a.txt": b"hello", "evil.pkl": corpus.EVIL_PICKLE}, compression=zipfile.ZIP_STORED)
    eocd = data.rfind(b"PK\x05\x06")
    cd_offset = struct.unpack("<I", data[eocd + 16 : eocd + 20])[0]
    first_len = 46 + len("a.txt")
    new_eocd = bytearray(data[eocd:])
    struct.pack_into("<HHI", new_eocd, 8, 1, 1, first_len)
    hidden = data[:cd_offset] + data[cd_offset : cd_offset + first_len] + bytes(new_eocd)
    # When scanned
    report = scan_bytes(hidden, "hidden.zip")
    # Then the unlisted member is reported and its payload found
    assert any("not listed" in f.message for f in findings_of(report, RuleId.MALFORMED))
    assert findings_of(report, RuleId.CODE_EXEC)


def test_nesting_beyond_the_depth_limit_is_incomplete() -> None:
    report = scan_bytes(corpus.nested_zip(4), "nested.zip", max_depth=2)
    hits = findings_of(report, RuleId.SCAN_INCOMPLETE)
    assert hits and "nesting deeper" in hits[0].message
    assert hits[0].location == "nested.zip!level2.zip!level1.zip!level0.zip"


def test_entry_count_limit() -> None:
    members = {f"f{i}.txt": b"x" for i in range(30)}
    report = scan_bytes(corpus.zip_of(members), "many.zip", max_entries=10)
    assert findings_of(report, RuleId.ARCHIVE_UNSAFE) and findings_of(report, RuleId.SCAN_INCOMPLETE)


def test_encrypted_member_cannot_be_shown_safe() -> None:
    data = bytearray(corpus.zip_of({"secret.bin": b"x" * 100}, compression=zipfile.ZIP_STORED))
    for sig, field in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = data.find(sig)
        data[pos + field] |= 0x01  # "encrypted" flag
    report = scan_bytes(bytes(data), "enc.zip")
    assert any("encrypted" in f.message for f in findings_of(report, RuleId.SCAN_INCOMPLETE))


def test_unrecognised_binary_member_fails_closed() -> None:
    report = scan_bytes(corpus.zip_of({"blob.bin": bytes(range(256)) * 4}), "blob.zip")
    assert [f.location for f in findings_of(report, RuleId.SCAN_INCOMPLETE)] == ["blob.zip!blob.bin"]


def test_the_unrecognised_message_lists_every_registered_format() -> None:
    # Given bytes no scanner claims
    report = scan_bytes(bytes(range(256)) * 4, "blob.bin")
    message = findings_of(report, RuleId.SCAN_INCOMPLETE)[0].message
    # Then the "supported" list is the registry's (TF SavedModel included), not a hand-kept one
    listed = message.split("(supported: ", 1)[1].rstrip(")").split(", ")
    assert listed == [f.value for f in Format if f in set(registered_formats())]
    assert Format.TF_SAVEDMODEL.value in listed and Format.GGUF.value in listed


# -- tar ---------------------------------------------------------------------------------------------------


def test_tar_links_devices_and_absolute_paths_are_unsafe() -> None:
    report = scan_bytes(corpus.tar_unsafe(), "evil.tar")
    messages = [f.message for f in findings_of(report, RuleId.ARCHIVE_UNSAFE)]
    assert any("symbolic link to '/etc/passwd'" in m for m in messages)
    assert any("hard link" in m for m in messages)
    assert any("'/tmp/abs.txt' is an absolute path" in m for m in messages)
    assert any("device" in m for m in messages)


def test_old_v7_tar_is_detected_by_checksum() -> None:
    data = corpus.v7_tar({"tokenizer_config.json": corpus.tokenizer_config(corpus.SSTI_TEMPLATE)})
    assert b"ustar" not in data[:512]
    report = scan_bytes(data, "old.tar")
    assert report.format == Format.TAR
    assert findings_of(report, RuleId.CODE_EXEC)[0].location == "old.tar!tokenizer_config.json"


def test_data_after_the_end_of_a_tar_is_reported_and_scanned() -> None:
    # Given a tar followed by a second tar (what `tar -i` would also extract)
    first = corpus.tar_of({"a.txt": b"hello"})
    second = corpus.tar_of({"evil.pkl": corpus.EVIL_PICKLE})
    report = scan_bytes(first + second, "concat.tar")
    assert any("after the end of the tar" in f.message for f in findings_of(report, RuleId.MALFORMED))
    assert any("<trailing>!evil.pkl" in f.location for f in findings_of(report, RuleId.CODE_EXEC))


def test_duplicate_tar_members_are_unsafe() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for content in (b"one", b"two"):
            info = tarfile.TarInfo("a.txt")
            info.size = len(content)
            t.addfile(info, io.BytesIO(content))
    data = buf.getvalue()
    report = scan_bytes(data, "dup.tar")
    assert any("duplicate" in f.message for f in findings_of(report, RuleId.ARCHIVE_UNSAFE))


def test_oversized_pax_header_is_refused_before_tarfile_reads_it() -> None:
    # Given a PAX extended header that declares 100 MiB of attributes
    header = bytearray(512)
    header[0:9] = b"PaxHeader"
    header[100:108] = b"0000644\x00"
    header[124:136] = b"%011o\x00" % (100 << 20)
    header[156:157] = b"x"
    header[257:263] = b"ustar\x00"
    header[263:265] = b"00"
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\x00 " % sum(header)
    report = scan_bytes(bytes(header) + b"\x00" * 4096, "pax.tar", max_metadata_bytes=1 << 20)
    assert any("extended header" in f.message for f in findings_of(report, RuleId.MALFORMED))


# -- compressed streams ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gzip", "bz2", "xz", "lzma", "zlib"])
def test_each_compression_is_detected_and_its_content_scanned(kind: str) -> None:
    # Given a malicious pickle compressed with each supported format
    data = corpus.compressed(kind, corpus.EVIL_PICKLE + b"\n" * 64)
    # When scanned
    report = scan_bytes(data, f"model.{kind}")
    # Then the compression is recognised and the payload found inside
    assert report.format == Format.COMPRESSED
    assert report.metadata["compression"] == kind
    assert findings_of(report, RuleId.CODE_EXEC)[0].location.startswith(f"model.{kind}!<decompressed>")


@pytest.mark.parametrize("kind", ["gzip", "bz2", "xz", "lzma", "zlib"])
def test_compressed_benign_content_is_clean(kind: str) -> None:
    report = scan_bytes(corpus.compressed(kind, corpus.safetensors_benign()), "w.st.z")
    assert not rules_of(report) & problem_rules(), report.findings


def test_gzip_bomb_is_stopped_by_the_ratio_limit() -> None:
    data = gzip.compress(b"\x00" * (20 << 20))
    report = scan_bytes(data, "bomb.gz", max_ratio=100)
    assert any("bomb" in f.message for f in findings_of(report, RuleId.ARCHIVE_UNSAFE))
    assert findings_of(report, RuleId.SCAN_INCOMPLETE)


def test_every_gzip_member_is_decompressed() -> None:
    # Given an evil pickle split over two gzip members (gunzip outputs both, concatenated)
    data = gzip.compress(corpus.EVIL_PICKLE[:10]) + gzip.compress(corpus.EVIL_PICKLE[10:])
    # When scanned
    report = scan_bytes(data, "multi.gz")
    # Then the payload is found, which needs both members
    assert findings_of(report, RuleId.CODE_EXEC)
    assert not findings_of(report, RuleId.MALFORMED)


def test_garbage_after_a_gzip_stream_is_reported() -> None:
    data = gzip.compress(b"hello text\n") + corpus.EVIL_PICKLE
    report = scan_bytes(data, "tail.gz")
    assert any("after the end of the gzip" in f.message for f in findings_of(report, RuleId.MALFORMED))
    assert any("<trailing>" in f.location for f in findings_of(report, RuleId.CODE_EXEC))


def test_truncated_gzip_is_malformed() -> None:
    data = gzip.compress(bytes(range(256)) * 400)[:-200]
    report = scan_bytes(data, "cut.gz")
    assert any("truncated" in f.message for f in findings_of(report, RuleId.MALFORMED))


def test_compression_sniffer_rejects_lookalikes() -> None:
    assert compression_kind(b"x\x9cnot really zlib at all") is None
    assert compression_kind(b"BZh9 but no block magic") is None
    assert compression_kind(b"hello world") is None
    assert compression_kind(corpus.compressed("zlib", b"data")) == "zlib"


# -- the window stream -------------------------------------------------------------------------------------


def test_substream_is_a_bounded_seekable_window() -> None:
    base = io.BytesIO(b"0123456789")
    sub = SubStream(base, 2, 5)
    assert sub.read() == b"23456"
    sub.seek(-2, io.SEEK_END)
    assert sub.read(10) == b"56"
    sub.seek(1)
    base.seek(0)  # someone else moved the base stream: the window does not care
    assert sub.read(2) == b"34"
    with pytest.raises(ValueError):
        sub.seek(-1)
