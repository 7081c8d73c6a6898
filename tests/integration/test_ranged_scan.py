"""Scanning through ranged reads (moto): formats whose code-bearing parts are headers and directories are
judged from a few blocks, and the verdict equals the one from the whole file."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from modelshield.models import Format
from modelshield.ranged import RangedObject
from modelshield.scanning.registry import scan_stream

from tests.builders import moto_account, moto_credentials
from tests.corpus.formats import EVIL_PICKLE, gguf_raw, safetensors_raw, zip_of

MiB = 1024 * 1024
TENSOR_BYTES = 24 * MiB


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    moto_credentials(monkeypatch)
    with moto_account(unversioned=("ingest",)) as (client, _kms):
        yield client


def _ranged(s3: Any, key: str, data: bytes) -> RangedObject:
    put = s3.put_object(Bucket="ingest", Key=key, Body=data)
    return RangedObject(s3, "ingest", key, size=len(data), etag=put["ETag"], block_size=256 * 1024)


def _safetensors() -> bytes:
    header = {"w": {"dtype": "F32", "shape": [TENSOR_BYTES // 4], "data_offsets": [0, TENSOR_BYTES]}}
    return safetensors_raw(header, bytes(TENSOR_BYTES))


def _gguf() -> bytes:
    kvs = [("general.architecture", 8, struct.pack("<Q", 5) + b"llama")]
    return gguf_raw(kvs, [("w", [TENSOR_BYTES // 4], 0, 0)], data=bytes(TENSOR_BYTES))


def _npz_with_object_array() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(TENSOR_BYTES // 8, dtype=np.float64))
    return zip_of({"weights.npy": buffer.getvalue(), "extra.pkl": EVIL_PICKLE}, compression=0)


@pytest.mark.parametrize(
    ("build", "fmt"),
    [(_safetensors, Format.SAFETENSORS), (_gguf, Format.GGUF)],
    ids=["safetensors", "gguf"],
)
def test_header_formats_are_judged_from_a_few_blocks_with_the_whole_files_verdict(
    s3: Any, build: Any, fmt: Format
) -> None:
    # Given a 24 MiB model whose tensor bytes follow a small header
    data = build()
    source = _ranged(s3, "models/big", data)
    # When it is scanned through ranged reads
    ranged = scan_stream(source, "models/big", sha256="-", size=source.size)
    whole = scan_stream(io.BytesIO(data), "models/big", sha256="-")
    # Then its format and findings are those of the whole-file scan
    assert ranged.format == whole.format == fmt
    assert [(f.rule, f.message) for f in ranged.findings] == [(f.rule, f.message) for f in whole.findings]
    # and it read a small fraction of the object: the header, the tail a zip sniffer checks, and the
    # few offsets where an HDF5 superblock may sit
    assert source.bytes_fetched < len(data) // 8, source.bytes_fetched
    assert source.requests < 32, source.requests


def test_a_zip_is_judged_from_its_directory_and_code_bearing_members(s3: Any) -> None:
    # Given a 24 MiB stored zip with a large array member and a small malicious pickle
    data = _npz_with_object_array()
    source = _ranged(s3, "models/bundle.zip", data)
    # When it is scanned through ranged reads
    ranged = scan_stream(source, "models/bundle.zip", sha256="-", size=source.size)
    whole = scan_stream(io.BytesIO(data), "models/bundle.zip", sha256="-")
    # Then the pickle is found, exactly as in the whole-file scan
    assert {f.rule for f in ranged.findings} == {f.rule for f in whole.findings}
    assert any("os" in f.message and "system" in f.message for f in ranged.findings)


def test_the_cache_is_bounded_whatever_is_read(s3: Any) -> None:
    # Given a reader with a 4-block cache over a 24 MiB object
    data = _safetensors()
    put = s3.put_object(Bucket="ingest", Key="m", Body=data)
    source = RangedObject(s3, "ingest", "m", size=len(data), etag=put["ETag"], block_size=MiB, cache_blocks=4)
    # When all of it is read in small pieces, and the start again
    while source.read(300_000):
        pass
    source.seek(0)
    head = source.read(16)
    # Then at most four blocks were ever held, and re-reading the start fetched it again
    assert len(source._cache) <= 4
    assert head == data[:16]
    assert source.bytes_fetched == len(data) + MiB
