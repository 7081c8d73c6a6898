"""Plaintext work files on ephemeral storage: where the pipeline stages an artifact while it scans it.

A worker killed mid-scan (timeout, OOM, `kill -9`) never runs its cleanup, and its `artifact-*` file of
plaintext would stay on the container's disk for every later invocation to find. So files this process
is not using are swept when a runtime starts (a fresh container) and, once they are older than a scan
could take, after every record.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PREFIX = "artifact-"
_active: set[str] = set()
_lock = threading.Lock()


def free_disk(path: Path) -> int:
    """Free bytes on the file system holding `path` (the figure the size check compares against)."""
    return shutil.disk_usage(path).free


@contextmanager
def work_file(workdir: Path) -> Iterator[tuple[int, Path]]:
    """A private temp file in `workdir`, deleted on exit, and protected from sweeps while open."""
    fd, name = tempfile.mkstemp(prefix=PREFIX, dir=workdir)
    with _lock:
        _active.add(name)
    try:
        yield fd, Path(name)
    finally:
        Path(name).unlink(missing_ok=True)
        with _lock:
            _active.discard(name)


def sweep(workdir: Path, *, older_than_seconds: float = 0.0) -> list[str]:
    """Delete `artifact-*` files that no scan in this process is using (and, if given, older than
    `older_than_seconds`). Returns the names removed."""
    if not workdir.is_dir():
        return []
    cutoff = time.time() - older_than_seconds
    removed = []
    for path in workdir.glob(f"{PREFIX}*"):
        with _lock:
            if str(path) in _active:
                continue
        with contextlib.suppress(FileNotFoundError):
            if older_than_seconds and os.stat(path).st_mtime > cutoff:
                continue
            path.unlink()
            removed.append(path.name)
    return removed
