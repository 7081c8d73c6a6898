"""Progress on a terminal for long work (upload, encrypt, decrypt, rescans, bulk jobs).

One bar on stderr: phase, bytes (or items) done of the total, percent and rate, redrawn at most ten
times a second. It is off when stderr is not a terminal (pipes, CI logs, `--format json` consumers
reading stdout are never affected: the bar never touches stdout) or when the caller passes `--quiet`.
A disabled bar costs one attribute check per update, so callers never branch on it.

    with Progress(total=size, phase="uploading", label="model.pt", enabled=progress_wanted(quiet)) as bar:
        for chunk in chunks:
            send(chunk)
            bar.advance(len(chunk))
        bar.phase("scanning")          # same line, new phase; total None shows a spinner-free counter

`ProgressReader` wraps a binary stream so that every read advances a bar: the way to add progress to a
library call that only takes a file object (encryption, decryption, boto3 bodies).
"""

from __future__ import annotations

import io
import sys
import time
from typing import IO, Any, BinaryIO

REDRAW_SECONDS = 0.1
BAR_WIDTH = 24


def progress_wanted(quiet: bool = False, stream: IO[str] | None = None) -> bool:
    """A bar is drawn only on an interactive terminal, and never with --quiet."""
    if quiet:
        return False
    target = stream if stream is not None else sys.stderr
    try:
        return bool(target.isatty())
    except (AttributeError, ValueError):  # closed or exotic streams
        return False


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"  # pragma: no cover - loop always returns


class Progress:
    """A single-line progress bar on a terminal; a no-op when disabled."""

    def __init__(
        self,
        total: int | None,
        *,
        phase: str,
        label: str = "",
        unit: str = "bytes",
        enabled: bool | None = None,
        stream: IO[str] | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = progress_wanted(stream=self.stream) if enabled is None else enabled
        self.total = total
        self.done = 0
        self.unit = unit
        self.label = label
        self._phase = phase
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._width = 0

    # -- updates ------------------------------------------------------------------------------------
    def advance(self, amount: int) -> None:
        """`amount` more bytes (or items) done. Also the signature boto3's transfer Callback expects."""
        self.done += amount
        if self.enabled:
            self._draw()

    __call__ = advance

    def set(self, done: int, total: int | None = None) -> None:
        """Absolute position (e.g. items finished of a job's total)."""
        self.done = done
        if total is not None:
            self.total = total
        if self.enabled:
            self._draw()

    def phase(self, name: str, *, total: int | None = None, reset: bool = True) -> None:
        """Switch to the next phase on the same line (uploading -> scanning -> encrypting)."""
        self._phase = name
        if reset:
            self.done = 0
            self.total = total
            self._started = time.monotonic()
        if self.enabled:
            self._draw(force=True)

    @property
    def current_phase(self) -> str:
        return self._phase

    def close(self, final: str | None = None) -> None:
        """Clear the line (or leave `final` on it) so that later output starts clean."""
        if not self.enabled:
            return
        self._draw(force=True)
        self.stream.write("\r" + " " * self._width + "\r")
        if final:
            self.stream.write(final + "\n")
        self.stream.flush()
        self.enabled = False

    def __enter__(self) -> Progress:
        if self.enabled:
            self._draw(force=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- rendering ----------------------------------------------------------------------------------
    def render(self) -> str:
        """The bar's text (without the carriage return); public so tests and other UIs can reuse it."""
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = self.done / elapsed
        if self.unit == "bytes":
            done, rate_text = human_bytes(self.done), f"{human_bytes(rate)}/s"
            of = f" / {human_bytes(self.total)}" if self.total else ""
        else:
            done, rate_text = str(self.done), f"{rate:.1f} {self.unit}/s"
            of = f" / {self.total} {self.unit}" if self.total else f" {self.unit}"
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            filled = int(fraction * BAR_WIDTH)
            bar = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction * 100:.1f}%"
        else:
            bar = ""
        return " ".join(part for part in (self.label, self._phase, bar, f"{done}{of}", rate_text) if part)

    def _draw(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < REDRAW_SECONDS:
            return
        self._last_draw = now
        text = self.render()
        pad = max(self._width - len(text), 0)
        self._width = max(self._width, len(text))
        try:
            self.stream.write("\r" + text + " " * pad)
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away: stop drawing, never fail the work
            self.enabled = False


class ProgressReader(io.RawIOBase):
    """A read-only binary stream that advances a Progress by every byte read through it."""

    def __init__(self, stream: BinaryIO | Any, progress: Progress) -> None:
        super().__init__()
        self._stream = stream
        self._progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if hasattr(self._stream, "readinto"):
            count = int(self._stream.readinto(buffer) or 0)
        else:  # e.g. an S3 StreamingBody: read() only
            view = memoryview(buffer).cast("B")
            data = self._stream.read(len(view))
            count = len(data)
            view[:count] = data
        self._progress.advance(count)
        return count

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            super().close()
