"""A tiny protobuf wire-format reader over a seekable stream, shared by the ONNX and SavedModel scanners.

Why not the `onnx`/`tensorflow` packages: they are hundreds of MB (the Lambda layer has to stay small), they
parse the whole message into memory (an ONNX file with inline weights can be GBs), and parsing untrusted
input with a full protobuf runtime is itself attack surface. The wire format is simple: a message is a
sequence of (tag varint, payload) pairs, and a length-delimited payload is either bytes, a string, a packed
array or a nested message. This reader yields fields lazily with their absolute offsets, so a scanner
descends into the sub-messages it cares about and *seeks past* the large ones (tensor data) without reading
them. Memory stays bounded by the window buffer plus the small fields a scanner chooses to read.

Every malformation (truncated varint, a length beyond its parent, groups, wire types 6/7) raises
`WireError`; scanners turn that into an MS-MALFORMED finding.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from modelshield.scanning.streams import stream_size

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5
MAX_VARINT_BYTES = 10
MAX_FIELD_NUMBER = (1 << 29) - 1


class WireError(Exception):
    """The bytes are not a well-formed protobuf message (at the given absolute offset)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at byte {offset}")
        self.offset = offset


@dataclass(frozen=True, slots=True)
class Field:
    """One field as found on the wire. For LEN fields `value` is the payload length, else the number."""

    number: int
    wire_type: int
    value: int
    offset: int  # absolute offset of the payload (after the tag and, for LEN, the length)

    @property
    def end(self) -> int:
        """Absolute offset just past the payload."""
        if self.wire_type == LEN:
            return self.offset + self.value
        return self.offset  # the payload of a scalar was consumed by the tag reader

    def as_signed(self) -> int:
        """A varint read as int64 (two's complement), as protobuf's int32/int64 fields are."""
        v = self.value & 0xFFFFFFFFFFFFFFFF
        return v - (1 << 64) if v >> 63 else v


class ProtoReader:
    """Lazy field iteration over a window of a seekable stream, with a small read-ahead buffer."""

    def __init__(self, stream: BinaryIO, *, size: int | None = None, buffer_size: int = 64 * 1024) -> None:
        self._stream = stream
        if size is None:
            size = stream_size(stream)
        self.size = size
        self._buffer_size = buffer_size
        self._buf = b""
        self._buf_start = 0

    # -- raw access ----------------------------------------------------------------------------------
    def _window(self, offset: int, n: int) -> memoryview:
        """Up to `n` bytes at `offset` (fewer at the end of the stream), served from the buffer."""
        rel = offset - self._buf_start
        buffered_to_eof = self._buf_start + len(self._buf) >= self.size
        if rel < 0 or rel > len(self._buf) or (rel + n > len(self._buf) and not buffered_to_eof):
            self._stream.seek(offset)
            self._buf = self._stream.read(max(n, self._buffer_size))
            self._buf_start = offset
            rel = 0
        return memoryview(self._buf)[rel : rel + n]

    def read(self, offset: int, n: int) -> bytes:
        """Exactly `n` bytes at `offset`; WireError if the stream ends first."""
        if n <= self._buffer_size:
            data = bytes(self._window(offset, n))
        else:
            self._stream.seek(offset)
            data = self._stream.read(n)
        if len(data) != n:
            raise WireError(f"truncated: wanted {n} bytes", offset)
        return data

    def _varint(self, offset: int, end: int) -> tuple[int, int]:
        """Decode a varint at `offset` that must finish before `end`; returns (value, next offset)."""
        view = self._window(offset, MAX_VARINT_BYTES)
        result = 0
        for i, byte in enumerate(view):
            if offset + i >= end:
                break
            result |= (byte & 0x7F) << (7 * i)
            if byte < 0x80:
                return result, offset + i + 1
        raise WireError("truncated or overlong varint", offset)

    def tag_at(self, offset: int) -> tuple[int, int, int]:
        """(field number, wire type, offset after the tag) of the tag at `offset`, without its payload."""
        tag, pos = self._varint(offset, self.size)
        return tag >> 3, tag & 7, pos

    def varint_at(self, offset: int) -> tuple[int, int]:
        """(value, offset after it) of the varint at `offset`."""
        return self._varint(offset, self.size)

    # -- fields --------------------------------------------------------------------------------------
    def fields(self, start: int = 0, end: int | None = None) -> Iterator[Field]:
        """Yield the fields of the message spanning [start, end). Raises WireError when malformed."""
        end = self.size if end is None else end
        if end > self.size:
            raise WireError(f"message end {end} beyond the stream ({self.size} bytes)", start)
        pos = start
        while pos < end:
            tag, pos = self._varint(pos, end)
            number, wire_type = tag >> 3, tag & 7
            if number == 0 or number > MAX_FIELD_NUMBER:
                raise WireError(f"invalid field number {number}", pos)
            if wire_type == VARINT:
                value, pos = self._varint(pos, end)
                yield Field(number, wire_type, value, pos)
            elif wire_type == I64 or wire_type == I32:
                width = 8 if wire_type == I64 else 4
                if pos + width > end:
                    raise WireError("truncated fixed-width field", pos)
                value = int.from_bytes(self._window(pos, width), "little")
                pos += width
                yield Field(number, wire_type, value, pos)
            elif wire_type == LEN:
                length, pos = self._varint(pos, end)
                if pos + length > end:
                    raise WireError(f"field {number} length {length} runs past its message", pos)
                yield Field(number, wire_type, length, pos)
                pos += length
            else:  # groups (3, 4) are not used by ONNX/TensorFlow; 6 and 7 do not exist
                raise WireError(f"unsupported wire type {wire_type} (field {number})", pos)

    def bytes_of(self, field: Field, limit: int) -> bytes:
        """The payload of a LEN field, refusing anything longer than `limit` (caller reports it)."""
        if field.wire_type != LEN:
            raise WireError(f"field {field.number} is not length-delimited", field.offset)
        if field.value > limit:
            raise WireError(
                f"field {field.number} is {field.value} bytes, over the {limit}-byte limit", field.offset
            )
        return self.read(field.offset, field.value)

    def text_of(self, field: Field, limit: int) -> str:
        """A string field, decoded leniently (names are reported, never trusted)."""
        return self.bytes_of(field, limit).decode("utf-8", errors="replace")

    def packed_varints(self, field: Field, limit: int) -> list[int]:
        """A packed repeated varint field (e.g. int64 dims), bounded by `limit` bytes."""
        data = self.bytes_of(field, limit)
        out: list[int] = []
        value = shift = 0
        for byte in data:
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                out.append(value)
                value = shift = 0
            elif shift >= 7 * MAX_VARINT_BYTES:
                raise WireError("overlong packed varint", field.offset)
        if shift:
            raise WireError("truncated packed varint", field.offset)
        return out
