"""Compressed streams (gzip, bz2, xz, lzma, zlib) and the budgeted decompression zip and joblib share.

Decompression always pulls bounded output (OUT_CHUNK per step) and checks, at every step, the ratio of
output to input (past RATIO_FLOOR), an optional declared size, and the artifact-wide budget
(`Limits.max_uncompressed_bytes` via `ScanContext.account_uncompressed`), so a bomb is noticed within one
step and reported as MS-ARCHIVE-UNSAFE before it costs memory or disk: output goes to a bounded spool.

A compressed file is decompressed whole (every concatenated member, as the command-line tools do), then
its content is detected and scanned as `<decompressed>`; bytes after the last member that are not zero
padding are reported and scanned as `<trailing>`.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from modelshield.models import Format, RuleId, Severity
from modelshield.scanning.registry import MiB, ScanContext, register
from modelshield.scanning.streams import READ_CHUNK, SubStream, peek, stream_size, window

SPOOL_MAX_MEMORY = 32 * MiB  # decompressed bytes kept in memory before spilling to a temp file
OUT_CHUNK = 1 * MiB  # decompress at most this much per step, so a bomb is noticed within one step
RATIO_FLOOR = 1 * MiB  # ratios are judged only past this much output (tiny members compress absurdly)
# Containers of numeric arrays (npz, torch zips): np.savez_compressed of zeros legitimately compresses
# ~1000x, so their members may reach this much output whatever the ratio.
ARRAY_RATIO_FLOOR = 16 * MiB


class Decoder:
    """One interface over zlib/gzip/bz2/lzma decompressors, always pulling bounded output."""

    def __init__(self, kind: str, filters: list[dict[str, object]] | None = None) -> None:
        self.kind = kind
        self._tail = b""
        self._last_out = 0
        if kind == "deflate":
            self._z = zlib.decompressobj(-15)
        elif kind == "gzip":
            self._z = zlib.decompressobj(31)
        elif kind == "zlib":
            self._z = zlib.decompressobj(15)
        elif kind == "bz2":
            self._b: bz2.BZ2Decompressor | lzma.LZMADecompressor = bz2.BZ2Decompressor()
        elif kind == "xz":
            self._b = lzma.LZMADecompressor(lzma.FORMAT_XZ)
        elif kind == "lzma":
            self._b = lzma.LZMADecompressor(lzma.FORMAT_ALONE)
        elif kind == "lzma-raw":
            self._b = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters)
        else:
            raise ValueError(kind)

    @property
    def _is_zlib(self) -> bool:
        return self.kind in ("deflate", "gzip", "zlib")

    def decompress(self, data: bytes) -> bytes:
        if self._is_zlib:
            out = self._z.decompress(self._tail + data, OUT_CHUNK)
            self._tail = self._z.unconsumed_tail
        else:
            out = self._b.decompress(data, OUT_CHUNK)
        self._last_out = len(out)
        return out

    @property
    def needs_input(self) -> bool:
        if self._is_zlib:
            return not self._tail and self._last_out < OUT_CHUNK
        return bool(self._b.needs_input)

    @property
    def eof(self) -> bool:
        return bool(self._z.eof if self._is_zlib else self._b.eof)

    @property
    def unused_data(self) -> bytes:
        return (self._z.unused_data + self._tail) if self._is_zlib else self._b.unused_data


class BombError(Exception):
    """Decompression stopped by a ratio or size budget (already reported)."""


@dataclass
class Inflated:
    spool: tempfile.SpooledTemporaryFile[bytes]
    size: int
    crc: int
    consumed: int  # compressed bytes used
    unused: bytes  # bytes after the end of the compressed stream (first chunk of them)
    complete: bool  # the decoder reached its end-of-stream marker


def inflate(
    read: Callable[[int], bytes],
    kind: str,
    ctx: ScanContext,
    *,
    what: str,
    max_output: int | None = None,
    filters: list[dict[str, object]] | None = None,
    ratio_floor: int = RATIO_FLOOR,
) -> Inflated:
    """Decompress one stream from `read` into a spool, enforcing ratio, size and artifact budgets.

    Raises BombError (after reporting) when a budget is exceeded; zlib/lzma errors propagate as-is.
    """
    decoder = Decoder(kind, filters)
    spool: tempfile.SpooledTemporaryFile[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_MEMORY)
    total = consumed = crc = stalls = 0
    ratio = ctx.limits.max_ratio
    try:
        while not decoder.eof:
            ctx.check()
            data = b""
            if decoder.needs_input:
                data = read(READ_CHUNK)
                if not data:
                    break  # truncated stream: caller decides
                consumed += len(data)
            out = decoder.decompress(data)
            if not out:
                stalls = 0 if data else stalls + 1
                if stalls > 64:
                    raise ValueError("decompressor makes no progress")
                continue
            total += len(out)
            if max_output is not None and total > max_output:
                ctx.add(
                    RuleId.MALFORMED,
                    Severity.HIGH,
                    f"{what} inflates past its declared size of {max_output} bytes",
                )
                raise BombError(what)
            if total > ratio_floor and total > ratio * max(consumed, 1):
                ctx.add(
                    RuleId.ARCHIVE_UNSAFE,
                    Severity.HIGH,
                    f"{what} decompresses more than {ratio:.0f}x its compressed size (a decompression bomb)",
                    ratio_limit=ratio,
                )
                raise BombError(what)
            if not ctx.account_uncompressed(len(out)):
                ctx.add(
                    RuleId.ARCHIVE_UNSAFE,
                    Severity.HIGH,
                    f"{what}: more than {ctx.limits.max_uncompressed_bytes} bytes decompressed in this "
                    "artifact",
                )
                raise BombError(what)
            crc = zlib.crc32(out, crc)
            spool.write(out)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return Inflated(spool, total, crc, consumed, decoder.unused_data if decoder.eof else b"", decoder.eof)


def compression_kind(head: bytes) -> str | None:
    """Which single-stream compression `head` starts with, by magic bytes and a trial decode."""
    if head[:3] == b"\x1f\x8b\x08":
        return "gzip"
    if head[:3] == b"BZh" and head[3:4] in b"123456789" and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):
        return "bz2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0 and _trial(head, "zlib"):
        return "zlib"
    if len(head) >= 13 and head[0] < 225 and _plausible_lzma_alone(head) and _trial(head, "lzma"):
        return "lzma"
    return None


def _plausible_lzma_alone(head: bytes) -> bool:
    dict_size = struct.unpack("<I", head[1:5])[0]
    usize = struct.unpack("<Q", head[5:13])[0]
    return (1 << 12) <= dict_size <= (1 << 30) and (usize == 0xFFFFFFFFFFFFFFFF or usize < (1 << 48))


def _trial(head: bytes, kind: str) -> bool:
    try:
        decoder = Decoder(kind)
        out = decoder.decompress(head[:4096])
        return bool(out) or decoder.needs_input or decoder.eof
    except (zlib.error, lzma.LZMAError, ValueError):
        return False


def sniff_compressed(head: bytes, stream: BinaryIO) -> bool:
    return compression_kind(head) is not None


_MAGIC_OF = {"gzip": b"\x1f\x8b", "bz2": b"BZh", "xz": b"\xfd7zXZ\x00"}


@register(Format.COMPRESSED, sniff=sniff_compressed, priority=50)
def scan_compressed(stream: BinaryIO, ctx: ScanContext) -> None:
    """Decompress (every concatenated member, as gzip/bzip2/xz tools do) under budgets, then scan."""
    size = stream_size(stream)
    kind = compression_kind(stream.read(4096))
    stream.seek(0)
    if kind is None:  # pragma: no cover - the sniffer said otherwise
        ctx.incomplete("compressed stream of unknown kind")
        return
    ctx.set_metadata("compression", kind)
    spool: tempfile.SpooledTemporaryFile[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_MEMORY)
    try:
        pos, members = 0, 0
        while pos < size:
            members += 1
            source = SubStream(stream, pos, size - pos)
            try:
                part = inflate(source.read, kind, ctx, what=f"{kind} stream")
            except BombError:
                ctx.incomplete(f"{kind} content not scanned: decompression stopped by a budget")
                return
            except (zlib.error, lzma.LZMAError, OSError, ValueError, EOFError) as exc:
                ctx.add(
                    RuleId.MALFORMED, Severity.HIGH, f"{kind} stream does not decompress: {exc}", offset=pos
                )
                ctx.incomplete(f"{kind} content not scanned (corrupt stream)")
                return
            with part.spool:
                while chunk := part.spool.read(READ_CHUNK):
                    spool.write(chunk)
            if not part.complete:
                ctx.add(RuleId.MALFORMED, Severity.HIGH, f"{kind} stream is truncated", offset=pos)
                break
            pos += part.consumed - len(part.unused)
            rest = peek(stream, pos, 16)
            magic = _MAGIC_OF.get(kind)
            if not rest:
                break
            if magic is not None and rest.startswith(magic):
                continue  # another member: tools decompress all of them
            if _all_zero(stream, pos, size, ctx):
                break  # zero padding (tape blocks)
            ctx.add(
                RuleId.MALFORMED,
                Severity.MEDIUM,
                f"{size - pos} bytes after the end of the {kind} stream; scanned as '<trailing>'",
                offset=pos,
            )
            ctx.scan_nested(window(stream, pos, size - pos), "<trailing>")
            break
        spool.seek(0)
        ctx.scan_nested(spool, "<decompressed>")  # type: ignore[arg-type]
    finally:
        spool.close()


def _all_zero(stream: BinaryIO, pos: int, size: int, ctx: ScanContext) -> bool:
    stream.seek(pos)
    while pos < size:
        ctx.check()
        chunk = stream.read(READ_CHUNK)
        if not chunk:
            break
        if chunk.strip(b"\x00"):
            return False
        pos += len(chunk)
    return True
