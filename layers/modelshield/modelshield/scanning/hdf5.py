"""A minimal HDF5 reader: the root group's attributes, without h5py, every offset bounds-checked.

Why not h5py: it is not a runtime dependency (the Lambda layer must stay small) and it is a C library
parsing hostile bytes. This reader follows the superblock (v0-v3) to the root group's object header (v1/v2,
with continuation blocks) and reads its attribute messages (v1-v3): fixed-length strings inline,
variable-length strings from the global heap. That is exactly where Keras keeps `model_config` and
`training_config`. Not read: dense attribute storage (fractal heaps, used only with > 8 attributes under
libver='latest') and shared datatypes, which the caller reports as MS-SCAN-INCOMPLETE; datasets (weights)
are never read. Every read is checked against the file size and `max_value` before anything is allocated.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from modelshield.scanning.streams import stream_size

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class HDF5Error(Exception):
    pass


UNDEFINED = 0xFFFFFFFFFFFFFFFF


@dataclass
class RootAttributes:
    strings: dict[str, list[str]] = field(default_factory=dict)  # string-typed attributes
    others: list[str] = field(default_factory=list)  # names of attributes of other types
    dense: bool = False  # dense attribute storage present (not read)
    unreadable: list[str] = field(default_factory=list)  # attributes we could not decode


class HDF5Reader:
    """Just enough HDF5 to read the root group's attributes, with every offset bounds-checked."""

    def __init__(self, stream: BinaryIO, *, max_value: int) -> None:
        self.stream = stream
        self.size = stream_size(stream)
        self.max_value = max_value
        self.base = 0
        self.offset_size = 8
        self.length_size = 8
        self.superblock = self._find_superblock()

    def _read(self, offset: int, n: int) -> bytes:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise HDF5Error(f"read of {n} bytes at {offset} is outside the file ({self.size} bytes)")
        self.stream.seek(offset)
        data = self.stream.read(n)
        if len(data) != n:
            raise HDF5Error("short read")
        return data

    def _uint(self, data: bytes, pos: int, width: int) -> int:
        if pos + width > len(data):
            raise HDF5Error("field runs past its structure")
        return int.from_bytes(data[pos : pos + width], "little")

    def _addr(self, value: int) -> int:
        if value == (1 << (8 * self.offset_size)) - 1:
            return UNDEFINED
        return self.base + value

    def _find_superblock(self) -> int:
        offset = 0
        while offset + 8 <= self.size:
            if self._read(offset, 8) == HDF5_SIGNATURE:
                return offset
            offset = 512 if offset == 0 else offset * 2
            if offset > 64 * 1024 * 1024:
                break
        raise HDF5Error("no HDF5 superblock signature")

    def root_object_header(self) -> int:
        sb = self._read(self.superblock, min(128, self.size - self.superblock))
        version = sb[8]
        if version in (0, 1):
            self.offset_size, self.length_size = sb[13], sb[14]
            if self.offset_size not in (2, 4, 8) or self.length_size not in (2, 4, 8):
                raise HDF5Error("bad offset/length sizes")
            pos = 24 if version == 0 else 28
            o = self.offset_size
            self.base = self._uint(sb, pos, o)
            pos += 4 * o  # base, free-space, end-of-file, driver info
            pos += o  # root symbol table entry: link name offset
            return self._addr(self._uint(sb, pos, o))
        if version in (2, 3):
            self.offset_size, self.length_size = sb[9], sb[10]
            if self.offset_size not in (2, 4, 8) or self.length_size not in (2, 4, 8):
                raise HDF5Error("bad offset/length sizes")
            o = self.offset_size
            self.base = self._uint(sb, 12, o)
            return self._addr(self._uint(sb, 12 + 3 * o, o))
        raise HDF5Error(f"unsupported superblock version {version}")

    # -- object headers ------------------------------------------------------------------------
    def messages(self, address: int) -> Iterator[tuple[int, bytes]]:
        """(type, body) of every message in an object header, following continuation blocks."""
        if address == UNDEFINED:
            raise HDF5Error("root group has no object header")
        first = self._read(address, 16)
        pending: list[tuple[int, int, int]] = []  # (offset, length, version)
        if first[:4] == b"OHDR":
            flags = first[5]
            pos = address + 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
            width = 1 << (flags & 3)
            chunk0 = int.from_bytes(self._read(pos, width), "little")
            pending.append((pos + width, chunk0, 2))
            self._v2_flags = flags
        elif first[0] == 1:
            header_size = self._uint(first, 8, 4)
            pending.append((address + 16, header_size, 1))
        else:
            raise HDF5Error(f"unknown object header version {first[0]}")
        visited: set[int] = set()
        total = 0
        while pending:
            offset, length, version = pending.pop(0)
            if offset in visited or len(visited) > 256:
                raise HDF5Error("object header continuation loop")
            visited.add(offset)
            if length > self.max_value + 65536:
                raise HDF5Error(f"object header block of {length} bytes")
            block = self._read(offset, length)
            for mtype, body in self._block_messages(block, version):
                total += 1
                if total > 65536:
                    raise HDF5Error("too many object header messages")
                if mtype == 0x10:  # continuation
                    o, ln = self.offset_size, self.length_size
                    cont = self._addr(self._uint(body, 0, o))
                    clen = self._uint(body, o, ln)
                    if version == 2:
                        if self._read(cont, 4) != b"OCHK":
                            raise HDF5Error("continuation block without OCHK signature")
                        pending.append((cont + 4, clen - 8, 2))
                    else:
                        pending.append((cont, clen, 1))
                else:
                    yield mtype, body

    def _block_messages(self, block: bytes, version: int) -> Iterator[tuple[int, bytes]]:
        pos = 0
        if version == 1:
            while pos + 8 <= len(block):
                mtype, size = struct.unpack_from("<HH", block, pos)
                body = block[pos + 8 : pos + 8 + size]
                if len(body) != size:
                    raise HDF5Error("object header message runs past its block")
                yield mtype, body
                pos += 8 + size
            return
        track_order = bool(getattr(self, "_v2_flags", 0) & 0x04)
        head = 6 if track_order else 4
        while pos + head <= len(block):
            mtype = block[pos]
            size = struct.unpack_from("<H", block, pos + 1)[0]
            body = block[pos + head : pos + head + size]
            if len(body) != size:
                raise HDF5Error("object header message runs past its block")
            yield mtype, body
            pos += head + size

    # -- attributes ----------------------------------------------------------------------------
    def root_attributes(self) -> RootAttributes:
        attrs = RootAttributes()
        for mtype, body in self.messages(self.root_object_header()):
            if mtype == 0x0C:
                self._attribute(body, attrs)
            elif mtype == 0x15:  # attribute info: dense storage when the fractal heap address is defined
                flags = body[1] if len(body) > 1 else 0
                pos = 2 + (2 if flags & 1 else 0)
                if self._addr(self._uint(body, pos, self.offset_size)) != UNDEFINED:
                    attrs.dense = True
        return attrs

    def _attribute(self, body: bytes, attrs: RootAttributes) -> None:
        if len(body) < 8:
            raise HDF5Error("attribute message too short")
        version, flags = body[0], body[1]
        name_size, type_size, space_size = struct.unpack_from("<HHH", body, 2)
        if version == 1:
            pad = lambda n: (n + 7) & ~7  # noqa: E731 - v1 pads each part to 8 bytes
            pos = 8
        elif version in (2, 3):
            pad = lambda n: n  # noqa: E731
            pos = 8 if version == 2 else 9
        else:
            raise HDF5Error(f"attribute message version {version}")
        name = body[pos : pos + name_size].split(b"\x00", 1)[0].decode("utf-8", errors="replace")
        pos += pad(name_size)
        dtype = body[pos : pos + type_size]
        pos += pad(type_size)
        space = body[pos : pos + space_size]
        pos += pad(space_size)
        data = body[pos:]
        if flags & 0x03 and version >= 2:
            attrs.unreadable.append(name)  # shared datatype/dataspace: stored elsewhere
            return
        count = self._element_count(space)
        values = self._strings(dtype, data, count)
        if values is None:
            attrs.others.append(name)
        else:
            attrs.strings[name] = values

    def _element_count(self, space: bytes) -> int:
        if len(space) < 2:
            raise HDF5Error("dataspace too short")
        version, rank = space[0], space[1]
        if version == 1:
            pos = 8
        elif version == 2:
            if len(space) > 3 and space[3] == 2:
                return 0  # null dataspace
            pos = 4
        else:
            raise HDF5Error(f"dataspace version {version}")
        count = 1
        for i in range(rank):
            count *= self._uint(space, pos + i * self.length_size, self.length_size)
        return count

    def _strings(self, dtype: bytes, data: bytes, count: int) -> list[str] | None:
        """String values (fixed or variable length) of an attribute; None for other types."""
        if len(dtype) < 8:
            raise HDF5Error("datatype too short")
        cls = dtype[0] & 0x0F
        size = self._uint(dtype, 4, 4)
        count = min(count, 64)
        if cls == 3:  # fixed-length string
            out = []
            for i in range(count):
                chunk = data[i * size : (i + 1) * size]
                out.append(chunk.split(b"\x00", 1)[0].decode("utf-8", errors="replace"))
            return out
        if cls == 9 and (dtype[1] & 0x0F) == 1:  # variable-length string: global heap references
            out = []
            ref = 4 + self.offset_size + 4
            for i in range(count):
                item = data[i * ref : (i + 1) * ref]
                if len(item) != ref:
                    raise HDF5Error("variable-length string reference truncated")
                length = self._uint(item, 0, 4)
                heap = self._addr(self._uint(item, 4, self.offset_size))
                index = self._uint(item, 4 + self.offset_size, 4)
                out.append(self._global_heap_object(heap, index, length).decode("utf-8", errors="replace"))
            return out
        return None

    def _global_heap_object(self, address: int, index: int, length: int) -> bytes:
        if length > self.max_value:
            raise HDF5Error(f"attribute string of {length} bytes is over the metadata limit")
        header = self._read(address, 8 + self.length_size)
        if header[:4] != b"GCOL":
            raise HDF5Error("global heap collection signature missing")
        collection_size = self._uint(header, 8, self.length_size)
        end = address + collection_size
        pos = address + 8 + self.length_size
        objects = 0
        while pos + 8 + self.length_size <= min(end, self.size):
            objects += 1
            if objects > 1_000_000:
                raise HDF5Error("global heap has too many objects")
            head = self._read(pos, 8 + self.length_size)
            obj_index = self._uint(head, 0, 2)
            obj_size = self._uint(head, 8, self.length_size)
            if obj_index == 0:
                break  # free space: the end of the objects
            if obj_index == index:
                if obj_size < length:
                    raise HDF5Error("global heap object shorter than its reference")
                return self._read(pos + 8 + self.length_size, length)
            pos += 8 + self.length_size + ((obj_size + 7) & ~7)
        raise HDF5Error(f"global heap object {index} not found")


def sniff_hdf5(head: bytes, stream: BinaryIO) -> bool:
    """HDF5 signature at 0 or at a user-block offset (512, 1024, ...), as the HDF5 library searches."""
    if head[:8] == HDF5_SIGNATURE:
        return True
    offset = 512
    size = stream_size(stream)
    while offset + 8 <= min(size, 64 * 1024 * 1024):
        stream.seek(offset)
        if stream.read(8) == HDF5_SIGNATURE:
            return True
        offset *= 2
    return False
