"""A seekable, read-only file over one S3 object version, read by ranged GETs through a bounded cache.

Why: the pure scanners take any seekable binary stream, and most model formats need only their headers,
directories and the members that can hold code -- a 40 GB GGUF or safetensors file is a few megabytes of
metadata in front of tensor bytes nobody has to read to judge it. Spooling such an object to ephemeral
storage costs its whole size in disk and time; this reader fetches only the blocks a scanner touches.

Bounded: at most `cache_blocks` blocks of `block_size` bytes are held (least recently used evicted), so
memory stays flat whatever the object's size; `bytes_fetched` says how much was actually read, which the
pipeline records so a verdict says what it relied on. The object is pinned to a version (and its ETag
checked on every GET via If-Match) so a concurrent overwrite cannot splice two objects into one scan.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from typing import Any, Final

from modelshield.errors import IntegrityError

DEFAULT_BLOCK_SIZE: Final = 1024 * 1024  # one ranged GET; headers and zip directories fit in a few
DEFAULT_CACHE_BLOCKS: Final = 64  # 64 MiB at most held in memory


class RangedObject(io.RawIOBase):
    """`open()`-like access to s3://bucket/key?versionId=..., fetched lazily in blocks."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        key: str,
        *,
        size: int,
        version_id: str | None = None,
        etag: str | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
        cache_blocks: int = DEFAULT_CACHE_BLOCKS,
    ) -> None:
        super().__init__()
        self._s3 = s3
        self.bucket, self.key = bucket, key
        self.version_id = version_id if version_id not in (None, "", "null") else None
        self._etag = etag
        self.size = size
        self._block_size = block_size
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_blocks = max(1, cache_blocks)
        self._position = 0
        self._lock = threading.Lock()
        self.bytes_fetched = 0
        self.requests = 0

    # -- io.RawIOBase ---------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._position + offset
        elif whence == io.SEEK_END:
            position = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if position < 0:
            raise ValueError("negative seek position")
        self._position = position
        return position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), max(0, self.size - self._position))
        done = 0
        while done < wanted:
            block_index, within = divmod(self._position + done, self._block_size)
            block = self._block(block_index)
            n = min(wanted - done, len(block) - within)
            view[done : done + n] = block[within : within + n]
            done += n
        self._position += done
        return done

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self.size - self._position)
        buffer = bytearray(min(size, max(0, self.size - self._position)))
        n = self.readinto(buffer)
        return bytes(buffer[:n])

    # -- blocks ---------------------------------------------------------------------------------
    def _block(self, index: int) -> bytes:
        with self._lock:
            cached = self._cache.get(index)
            if cached is not None:
                self._cache.move_to_end(index)
                return cached
        start = index * self._block_size
        end = min(start + self._block_size, self.size) - 1
        data = self.fetch(start, end + 1)
        with self._lock:
            self._cache[index] = data
            while len(self._cache) > self._cache_blocks:
                self._cache.popitem(last=False)
        return data

    def fetch(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the pinned version (not cached: for ranged encryption and hashing)."""
        if end <= start:
            return b""
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key, "Range": f"bytes={start}-{end - 1}"}
        if self.version_id:
            params["VersionId"] = self.version_id
        if self._etag:
            params["IfMatch"] = self._etag
        response = self._s3.get_object(**params)
        data = response["Body"].read()
        if len(data) != end - start:
            raise IntegrityError(
                f"s3://{self.bucket}/{self.key}: asked for bytes {start}-{end - 1}, got {len(data)} bytes "
                "(the object changed or was truncated while it was read)"
            )
        with self._lock:
            self.bytes_fetched += len(data)
            self.requests += 1
        return data
