"""Memory and time of the non-pickle scanners on large files: the header-only formats must stay tiny.

    .venv/bin/python benchmarks/format_bench.py                 # every case, files in benchmarks/.data/
    .venv/bin/python benchmarks/format_bench.py --cases safetensors-2g --keep

Each case runs `scan_path` in its own subprocess so its peak RSS (/proc VmHWM) is its own, and counts
the bytes the scanner actually read (the file object is wrapped). Large files are written sparse where
the format allows (tensor data is zeros, which the scanners never read), so generating them is quick.
Target (issue 3): a 2 GiB safetensors file scanned in < 200 MB RSS, reading only its header.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from peak_rss import peak_rss_mib  # benchmarks/ is sys.path[0] for its scripts

MiB = 1 << 20
GiB = 1 << 30
DATA = Path(__file__).resolve().parent / ".data"

CASES = {
    "safetensors-2g": "2 GiB safetensors (32 F32 tensors of 64 MiB), sparse",
    "gguf-2g": "2 GiB GGUF (32 F32 tensors, 150k-token vocabulary, chat template), sparse",
    "onnx-1g": "1 GiB ONNX with inline initializers (raw_data skipped by seeking)",
    "zip-stored-1g": "1 GiB zip holding a stored safetensors member (scanned in place)",
    "gzip-256m": "256 MiB safetensors inside gzip (streamed through the decompressor)",
}


# -- generators ----------------------------------------------------------------------------------
def _sparse(path: Path, head: bytes, size: int) -> None:
    with path.open("wb") as f:
        f.write(head)
        f.truncate(size)


def make_safetensors(path: Path, total: int = 2 * GiB, tensors: int = 32) -> None:
    per = total // tensors
    header: dict[str, Any] = {"__metadata__": {"license": "apache-2.0"}}
    for i in range(tensors):
        header[f"layer{i}.weight"] = {
            "dtype": "F32",
            "shape": [per // 4],
            "data_offsets": [i * per, (i + 1) * per],
        }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    _sparse(path, struct.pack("<Q", len(raw)) + raw, 8 + len(raw) + total)


def make_gguf(path: Path, total: int = 2 * GiB, tensors: int = 32) -> None:
    def s(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    per = total // tensors
    template = "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] }}{% endfor %}"
    vocab = b"".join(s(f"tok{i}") for i in range(150_000))
    kvs = [
        s("general.architecture") + struct.pack("<I", 8) + s("llama"),
        s("general.license") + struct.pack("<I", 8) + s("apache-2.0"),
        s("tokenizer.chat_template") + struct.pack("<I", 8) + s(template),
        s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 150_000) + vocab,
    ]
    infos = [s(f"blk.{i}.w") + struct.pack("<IQIQ", 1, per // 4, 0, i * per) for i in range(tensors)]
    head = b"GGUF" + struct.pack("<IQQ", 3, tensors, len(kvs)) + b"".join(kvs) + b"".join(infos)
    head += b"\x00" * (-len(head) % 32)
    _sparse(path, head, len(head) + total)


def make_onnx(path: Path, total: int = GiB, tensors: int = 16) -> None:
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    def field(num: int, payload: bytes) -> bytes:
        return varint(num << 3 | 2) + varint(len(payload)) + payload

    per = total // tensors
    with path.open("wb") as f:
        graph_len = 0
        parts: list[bytes | int] = []
        for i in range(tensors):  # TensorProto: dims (1), data_type (2), name (8), raw_data (9)
            head = varint(1 << 3) + varint(per // 4) + varint(2 << 3) + varint(1) + field(8, f"w{i}".encode())
            raw_head = varint(9 << 3 | 2) + varint(per)
            body_len = len(head) + len(raw_head) + per
            parts += [varint(5 << 3 | 2) + varint(body_len) + head + raw_head, per]
            graph_len += len(parts[-2]) + per  # type: ignore[arg-type]
        node = field(1, field(1, b"X") + field(1, b"w0") + field(2, b"Y") + field(4, b"MatMul"))
        graph_len += len(node)
        f.write(varint(1 << 3) + varint(8) + varint(7 << 3 | 2) + varint(graph_len) + node)
        for part in parts:
            if isinstance(part, int):
                f.seek(part, os.SEEK_CUR)
            else:
                f.write(part)
        f.write(field(8, field(1, b"") + varint(2 << 3) + varint(17)))
        f.truncate(f.tell())


def make_zip(path: Path, inner: Path) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        z.write(inner, "model/model.safetensors")


def make_gzip(path: Path) -> None:
    import gzip

    inner = DATA / "gz-inner.safetensors"
    make_safetensors(inner, total=256 * MiB, tensors=8)
    with inner.open("rb") as src, gzip.open(path, "wb", compresslevel=1) as dst:
        while chunk := src.read(8 * MiB):
            dst.write(chunk)
    inner.unlink()


def prepare(case: str) -> Path:
    DATA.mkdir(parents=True, exist_ok=True)
    paths = {
        "safetensors-2g": DATA / "big.safetensors",
        "gguf-2g": DATA / "big.gguf",
        "onnx-1g": DATA / "big.onnx",
        "zip-stored-1g": DATA / "big.zip",
        "gzip-256m": DATA / "big.safetensors.gz",
    }
    path = paths[case]
    if path.exists():
        return path
    if case == "safetensors-2g":
        make_safetensors(path)
    elif case == "gguf-2g":
        make_gguf(path)
    elif case == "onnx-1g":
        make_onnx(path)
    elif case == "zip-stored-1g":
        inner = DATA / "zip-inner.safetensors"
        make_safetensors(inner, total=GiB, tensors=16)
        make_zip(path, inner)
        inner.unlink()
    elif case == "gzip-256m":
        make_gzip(path)
    return path


# -- child: one scan, measured -------------------------------------------------------------------
class CountingReader(io.RawIOBase):
    """Counts bytes actually read from the file (seeks are free)."""

    def __init__(self, raw: io.FileIO) -> None:
        self.raw, self.bytes_read = raw, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self.raw.readinto(b) or 0
        self.bytes_read += n
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()


def child(path: str) -> None:
    from modelshield.scanning import scan_stream

    baseline = peak_rss_mib()
    raw = CountingReader(io.FileIO(path, "rb"))
    stream = io.BufferedReader(raw, buffer_size=64 * 1024)
    started = time.perf_counter()
    report = scan_stream(stream, os.path.basename(path), sha256="skipped")  # hashing is not scanning
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": round(elapsed, 3),
                "peak_rss_mib": round(peak_rss_mib(), 1),
                "import_rss_mib": round(baseline, 1),
                "bytes_read": raw.bytes_read,
                "size": os.path.getsize(path),
                "format": report.format.value,
                "findings": [f"{f.rule.value}: {f.message[:80]}" for f in report.findings],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--keep", action="store_true", help="keep the generated files in benchmarks/.data/")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    machine = platform.processor() or platform.machine()
    print(f"# format scanners on {machine}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"{'case':<16} {'format':<14} {'size':>10} {'read':>10} {'seconds':>8} {'peak RSS':>9}  findings")
    for case in args.cases.split(","):
        started = time.perf_counter()
        path = prepare(case)
        made = time.perf_counter() - started
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(path)], check=True, capture_output=True, text=True
        ).stdout
        result = json.loads(out.strip().splitlines()[-1])
        size = f"{result['size'] / MiB:.1f} MiB"
        read = f"{result['bytes_read'] / MiB:.2f} MiB"
        print(
            f"{case:<16} {result['format']:<14} {size:>10} {read:>10} {result['seconds']:>8.3f} "
            f"{result['peak_rss_mib']:>5.1f} MiB  "
            f"{result['findings'] or 'none'}  (generated in {made:.1f}s; RSS after imports "
            f"{result['import_rss_mib']} MiB)"
        )
        if not args.keep:
            path.unlink()


if __name__ == "__main__":
    main()
