"""Stream primitives every container and format scanner shares: a window on a stream, its size.

Nested scanners never get a copy of a member's bytes when the bytes sit in the file unchanged: they get a
seekable window on the outer stream (`window`), so a 10 GiB stored member costs no memory. Every scanner
that needs the length of its stream asks `stream_size` (one helper; it leaves the stream at 0).
`path_problem` is the extraction-path check that zip, tar and SavedModel member names all go through.

Nothing here imports the registry, so the registry itself can use these helpers.
"""

from __future__ import annotations

import io
import re
from typing import BinaryIO

from modelshield.models import Severity

READ_CHUNK = 1 << 20  # bytes read per step by loops over raw stream content

_DRIVE = re.compile(r"^[A-Za-z]:")


class SubStream(io.RawIOBase):
    """A seekable read-only window [start, start+length) of another seekable stream (no copy)."""

    def __init__(self, base: BinaryIO, start: int, length: int) -> None:
        super().__init__()
        self._base, self._start, self._length, self._pos = base, start, max(0, length), 0

    def __len__(self) -> int:
        return self._length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._length + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._length - self._pos)
        if n <= 0:
            return 0
        self._base.seek(self._start + self._pos)
        data = self._base.read(n)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def window(stream: BinaryIO, start: int, length: int) -> BinaryIO:
    """A buffered, seekable view of part of `stream`: what nested scanners receive for in-place members."""
    return io.BufferedReader(SubStream(stream, start, length), buffer_size=64 * 1024)  # type: ignore[return-value]


def stream_size(stream: BinaryIO) -> int:
    """The length of a seekable stream; leaves it positioned at 0."""
    stream.seek(0, io.SEEK_END)
    size = stream.tell()
    stream.seek(0)
    return size


def peek(stream: BinaryIO, pos: int, n: int) -> bytes:
    """Up to `n` bytes at `pos` (the stream is left after them)."""
    stream.seek(pos)
    return stream.read(n)


def path_problem(name: str) -> tuple[str, Severity] | None:
    """Why extracting a member with this name could write outside the target directory."""
    if "\x00" in name:
        return "contains a NUL byte", Severity.HIGH
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "is an absolute path", Severity.CRITICAL
    if ".." in re.split(r"[\\/]+", name):
        return "traverses out of the extraction directory ('..')", Severity.CRITICAL
    if "\\" in name:
        return "contains a backslash (a directory separator on Windows)", Severity.HIGH
    if any(ord(c) < 0x20 for c in name):
        return "contains control characters", Severity.HIGH
    return None
