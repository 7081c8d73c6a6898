"""A minimal HDF5 reader: the root group's attributes, without h5py, every offset bounds-checked.

Why not h5py: it is not a runtime dependency (the Lambda layer must stay small) and it is a C library
parsing hostile bytes. This reader follows the superblock (v0-v3) to the root group's object header (v1/v2,
with continuation blocks) and reads its attribute messages (v1-v3): fixed-length strings inline,
variable-length strings from the global heap. That is exactly where Keras keeps `model_config` and
`training_config`. Not read: dense attribute storage (fractal heaps, used only with > 8 attributes under
libver='latest') and shared datatypes, which the caller reports as MS-SCAN-INCOMPLETE; datasets (weights)
are never read. Every read is checked against the file size and `max_value` before anything is allocated.

`walk_tree` then visits every object reachable from the root (old-style symbol-table groups and new-style
compact links, each object once, at most MAX_OBJECTS) for what makes the library read another file when
the model loads: external links, external raw-data storage and virtual datasets. Groups whose links are in
dense storage (fractal heaps) are named as not walked.
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


@dataclass(frozen=True)
class ExternalReference:
    """Something the HDF5 library reads from outside this file when the object at `path` is opened."""

    path: str  # the object's path in the file, e.g. "/model_weights/dense/kernel"
    kind: str  # external-link | external-storage | virtual-dataset
    target: str  # the file (and object) named, as stored


@dataclass
class TreeWalk:
    references: list[ExternalReference] = field(default_factory=list)
    objects: int = 0
    unwalked: list[str] = field(default_factory=list)  # groups whose links the walk could not read


MAX_OBJECTS = 100_000  # objects visited per file; past this the walk is incomplete (reported)


def _cstrings(data: bytes, limit: int = 2) -> list[str]:
    return [p.decode("utf-8", errors="replace") for p in data.split(b"\x00")[:limit]]


class _TreeWalker:
    """Every object reachable from the root group (old-style symbol tables and new-style compact links),
    each visited once, with the messages that make the library read another file."""

    def __init__(self, reader: HDF5Reader, max_objects: int) -> None:
        self.r = reader
        self.max_objects = max_objects
        self.walk = TreeWalk()
        self.seen: set[int] = set()

    def run(self) -> TreeWalk:
        pending: list[tuple[str, int]] = [("/", self.r.root_object_header())]
        while pending:
            path, address = pending.pop()
            if address == UNDEFINED or address in self.seen:
                continue
            if len(self.seen) >= self.max_objects:
                self.walk.unwalked.append(f"{path} (over {self.max_objects} objects)")
                return self.walk
            self.seen.add(address)
            self.walk.objects += 1
            for mtype, body in self.r.messages(address):
                pending.extend(self._message(path, mtype, body))
        return self.walk

    def _child(self, path: str, name: str) -> str:
        return f"{path.rstrip('/')}/{name}"

    def _message(self, path: str, mtype: int, body: bytes) -> list[tuple[str, int]]:
        r = self.r
        if mtype == 0x0011:  # symbol table (old-style group): a v1 B-tree of symbol table nodes
            btree = r._addr(r._uint(body, 0, r.offset_size))
            heap = r._addr(r._uint(body, r.offset_size, r.offset_size))
            return self._symbol_table(path, btree, heap)
        if mtype == 0x0006:  # link (new-style group, compact storage)
            return self._link(path, body)
        if mtype == 0x0002:  # link info: a defined fractal heap address means dense link storage
            flags = body[1] if len(body) > 1 else 0
            pos = 2 + (8 if flags & 1 else 0)
            if r._addr(r._uint(body, pos, r.offset_size)) != UNDEFINED:
                self.walk.unwalked.append(f"{path} (links in dense storage)")
        elif mtype == 0x0007:  # external data files: the dataset's bytes live in other files
            self.walk.references.append(
                ExternalReference(path, "external-storage", ", ".join(self._external_files(body)) or "?")
            )
        elif mtype == 0x0008 and len(body) > 1 and body[0] >= 3 and body[1] == 3:  # virtual layout (v4)
            self.walk.references.append(
                ExternalReference(path, "virtual-dataset", "source datasets mapped from other files")
            )
        return []

    def _external_files(self, body: bytes) -> list[str]:
        r = self.r
        if len(body) < 8:
            raise HDF5Error("external data files message too short")
        used = r._uint(body, 6, 2)
        heap = r._addr(r._uint(body, 8, r.offset_size))
        pos = 8 + r.offset_size
        names = []
        for _ in range(min(used, 16)):
            offset = r._uint(body, pos, r.length_size)
            names.append(self._heap_name(heap, offset))
            pos += 3 * r.length_size  # name offset, file offset, size
        return names

    def _heap_name(self, heap: int, offset: int) -> str:
        r = self.r
        head = r._read(heap, 8 + 2 * r.length_size + r.offset_size)
        if head[:4] != b"HEAP":
            raise HDF5Error("local heap signature missing")
        size = r._uint(head, 8, r.length_size)
        data = r._addr(r._uint(head, 8 + 2 * r.length_size, r.offset_size))
        if offset >= size:
            raise HDF5Error("name offset outside its local heap")
        raw = r._read(data + offset, min(size - offset, 1024))
        return raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace")

    def _symbol_table(self, path: str, btree: int, heap: int) -> list[tuple[str, int]]:
        r = self.r
        children: list[tuple[str, int]] = []
        nodes, visited = [btree], set()
        o = r.offset_size
        while nodes:
            node = nodes.pop()
            if node == UNDEFINED or node in visited:
                continue
            visited.add(node)
            if len(visited) > self.max_objects:
                raise HDF5Error("group B-tree too large")
            head = r._read(node, 8 + 2 * o)
            if head[:4] != b"TREE" or head[4] != 0:
                raise HDF5Error(f"group B-tree node at {node} has no TREE signature")
            level, used = head[5], r._uint(head, 6, 2)
            entry = r.length_size + o  # key (heap offset), child
            body = r._read(node + 8 + 2 * o, used * entry + r.length_size)
            for i in range(used):
                child = r._addr(r._uint(body, i * entry + r.length_size, o))
                if level > 0:
                    nodes.append(child)
                else:
                    children.extend(self._symbol_node(path, child, heap))
        return children

    def _symbol_node(self, path: str, node: int, heap: int) -> list[tuple[str, int]]:
        r = self.r
        o = r.offset_size
        head = r._read(node, 8)
        if head[:4] != b"SNOD":
            raise HDF5Error(f"symbol table node at {node} has no SNOD signature")
        count = r._uint(head, 6, 2)
        entry = 2 * o + 24
        body = r._read(node + 8, count * entry)
        out = []
        for i in range(count):
            name = self._heap_name(heap, r._uint(body, i * entry, o))
            header = r._addr(r._uint(body, i * entry + o, o))
            cache = r._uint(body, i * entry + 2 * o, 4)
            if cache != 2:  # 2: a soft link (a path inside this file): nothing to visit through it
                out.append((self._child(path, name), header))
        return out

    def _link(self, path: str, body: bytes) -> list[tuple[str, int]]:
        r = self.r
        if len(body) < 2 or body[0] != 1:
            raise HDF5Error("link message of an unknown version")
        flags, pos = body[1], 2
        kind = 0
        if flags & 0x08:
            kind, pos = body[pos], pos + 1
        if flags & 0x04:
            pos += 8  # creation order
        if flags & 0x10:
            pos += 1  # name character set
        width = 1 << (flags & 3)
        length = r._uint(body, pos, width)
        pos += width
        name = body[pos : pos + length].decode("utf-8", errors="replace")
        pos += length
        child = self._child(path, name)
        if kind == 0:  # hard link
            return [(child, r._addr(r._uint(body, pos, r.offset_size)))]
        if kind == 64:  # external link: flags byte, then file name and object path
            size = r._uint(body, pos, 2)
            target = _cstrings(body[pos + 3 : pos + 2 + size])
            self.walk.references.append(ExternalReference(child, "external-link", ":".join(target)))
        elif kind != 1:  # 1: soft link, a path inside this file
            self.walk.references.append(ExternalReference(child, f"user-defined link type {kind}", "?"))
        return []


def walk_tree(reader: HDF5Reader, *, max_objects: int = MAX_OBJECTS) -> TreeWalk:
    """Visit every object of the file from its root group (bounded); see _TreeWalker."""
    return _TreeWalker(reader, max_objects).run()


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
