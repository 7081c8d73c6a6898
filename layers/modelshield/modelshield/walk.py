"""Walking a directory of model files for `scan DIR` and `upload DIR`, naming everything it skips.

Symlinks are not followed by default: a link can point anywhere (`/etc/shadow`, a huge device, a
network mount). With `follow_symlinks` (Hugging Face cache folders are made of links: `snapshots/<rev>/
model.safetensors -> ../../blobs/<sha>`), a link is followed only when its resolved target stays inside
the tree being walked; a link that leaves it, a broken link and a loop are skipped with the reason.
Special files (FIFOs, sockets, devices) are never opened: reading one can block forever.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from modelshield.errors import UsageError


@dataclass(frozen=True)
class Entry:
    path: Path  # what to open
    relative: str  # posix path under the walked root, as the user sees it (the link's name, not its target)
    skip_reason: str | None = None  # set: not opened, and why


def _inside(target: Path, root: Path) -> bool:
    return target == root or root in target.parents


def walk_files(root: Path, *, follow_symlinks: bool = False) -> Iterator[Entry]:
    """Every file under `root`, sorted, with links and special files judged as the module doc says."""
    real_root = root.resolve()
    seen_dirs: set[Path] = {real_root}

    def walk(directory: Path, relative: str) -> Iterator[Entry]:
        try:
            # Real entries before links, so that a directory reachable both ways is walked by its own name
            names = sorted(os.listdir(directory), key=lambda n: ((directory / n).is_symlink(), n))
        except OSError as exc:
            raise UsageError(f"{directory}: cannot list directory: {exc.strerror}") from None
        for name in names:
            path = directory / name
            shown = f"{relative}/{name}" if relative else name
            try:
                info = path.lstat()
            except OSError as exc:
                yield Entry(path, shown, f"cannot stat: {exc.strerror}")
                continue
            if stat.S_ISLNK(info.st_mode):
                link = os.readlink(path)
                if not follow_symlinks:
                    reason = f"symlink not followed (points to {link}); use --follow-symlinks"
                    yield Entry(path, shown, reason)
                    continue
                try:
                    target = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    yield Entry(path, shown, f"broken symlink (points to {link})")
                    continue
                if not _inside(target, real_root):
                    reason = f"symlink leaves the scanned tree (points to {target}); not followed"
                    yield Entry(path, shown, reason)
                    continue
                info = target.stat()
            if stat.S_ISDIR(info.st_mode):
                real = path.resolve()
                if real in seen_dirs:
                    yield Entry(path, shown, "directory already walked (a symlink loop or a second link)")
                    continue
                seen_dirs.add(real)
                yield from walk(path, shown)
            elif stat.S_ISREG(info.st_mode):
                yield Entry(path, shown)
            else:
                yield Entry(path, shown, "not a regular file (FIFO, socket or device); not opened")

    yield from walk(root, "")
