"""Format detection and scanner dispatch.

Scanners register themselves with a decorator, together with a *sniffer* that recognises their format
from content (magic bytes and structure), never from the file name. Dispatch walks the sniffers from the
most specific to the most generic (a PyTorch zip before a plain zip), so every file gets the deepest
scanner that understands it. Nested content (a pickle inside a zip inside a tar) goes back through
`ScanContext.scan_nested`, which applies the depth limit and builds the `outer!inner` location.

Fail closed: a file no sniffer claims, a scanner that raises, a limit or a deadline that is hit, all
become `MS-SCAN-INCOMPLETE` findings, which the policy turns into an ERROR verdict. Nothing here ever
returns "clean" for bytes it did not understand.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from modelshield.models import Finding, Format, RuleId, ScanReport, Severity
from modelshield.scanning.streams import stream_size

SCANNER_VERSION = "0.1.0"
SNIFF_BYTES = 4096  # bytes handed to every sniffer; sniffers may also seek/read the stream itself

GiB = 1 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Explicit resource limits. Hitting one is a finding (MS-SCAN-INCOMPLETE), never a crash or a hang."""

    max_file_bytes: int = 64 * GiB  # a single artifact
    max_depth: int = 6  # container nesting (zip in tar in gzip ...)
    max_entries: int = 20_000  # members of one archive
    max_ratio: float = 250.0  # uncompressed / compressed, per member and per stream
    max_uncompressed_bytes: int = 64 * GiB  # everything decompressed while scanning one artifact
    max_metadata_bytes: int = 64 * MiB  # a JSON header, a config, a GGUF string, a protobuf message
    max_pickle_memo: int = 1_000_000  # memo entries tracked while walking a pickle
    max_pickle_stack: int = 100_000  # pickle stack/mark depth
    timeout_seconds: float = 600.0


class ScanTimeout(Exception):
    """Raised by `ScanContext.check()` when the deadline passes; turned into a finding by dispatch."""


@dataclass
class _Shared:
    """State shared by a top-level scan and every nested context under it."""

    findings: list[Finding] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    formats: list[str] = field(default_factory=list)
    uncompressed_bytes: int = 0
    deadline: float = 0.0
    # Sidecar data a model reads by name (ONNX external data): resolved location -> the model naming it.
    # Members no scanner recognises are held back until the whole artifact is read, then either
    # explained by this map (raw tensor bytes a model references) or reported as unrecognised.
    referenced_data: dict[str, str] = field(default_factory=dict)
    unrecognised: list[ScanContext] = field(default_factory=list)


@dataclass
class ScanContext:
    """Passed to every scanner: where we are, the limits, and where findings go."""

    limits: Limits
    location: str
    depth: int = 0
    shared: _Shared = field(default_factory=_Shared)
    _ticks: int = field(default=0, repr=False)

    # -- reporting ---------------------------------------------------------------------------------
    def add(
        self,
        rule: RuleId,
        severity: Severity,
        message: str,
        *,
        offset: int | None = None,
        member: str | None = None,
        **detail: Any,
    ) -> Finding:
        """Record a finding at this context's location (optionally a byte offset or a member name)."""
        location = self.location
        if member:
            location = f"{location}!{member}"
        if offset is not None:
            location = f"{location}@{offset}"
        found = Finding(rule=rule, severity=severity, message=message, location=location, detail=detail)
        self.shared.findings.append(found)
        return found

    def incomplete(self, message: str, *, offset: int | None = None, **detail: Any) -> Finding:
        """The scan could not look at everything: fail closed."""
        return self.add(RuleId.SCAN_INCOMPLETE, Severity.HIGH, message, offset=offset, **detail)

    def reference_data(self, relative: str) -> None:
        """This model reads `relative` (a sidecar next to it, e.g. ONNX external data) as raw data."""
        container, sep, member = self.location.rpartition("!")
        base = member if sep else self.location
        target = posixpath.normpath(posixpath.join(posixpath.dirname(base), relative))
        self.shared.referenced_data[f"{container}{sep}{target}"] = self.location

    def set_metadata(self, key: str, value: Any) -> None:
        """Facts read from the bytes (license, chat template, ...) for the policy rules."""
        self.shared.metadata.setdefault(key, value)

    # -- limits ------------------------------------------------------------------------------------
    def check(self) -> None:
        """Call in every loop that can run long: raises ScanTimeout past the deadline."""
        if time.monotonic() > self.shared.deadline:
            raise ScanTimeout

    def tick(self) -> None:
        """check(), but reading the clock only every 256th call: for per-node/per-record hot loops."""
        self._ticks += 1
        if self._ticks & 0xFF == 0:
            self.check()

    def account_uncompressed(self, n: int) -> bool:
        """Count decompressed bytes; False once the artifact-wide budget is spent (caller stops)."""
        self.shared.uncompressed_bytes += n
        return self.shared.uncompressed_bytes <= self.limits.max_uncompressed_bytes

    # -- recursion ---------------------------------------------------------------------------------
    def nested(self, member: str) -> ScanContext:
        return ScanContext(
            limits=self.limits, location=f"{self.location}!{member}", depth=self.depth + 1, shared=self.shared
        )

    def scan_nested(self, stream: BinaryIO, member: str) -> Format:
        """Detect and scan a member of a container. The stream must be seekable (spool it if not)."""
        child = self.nested(member)
        if child.depth > self.limits.max_depth:
            child.incomplete(
                f"nesting deeper than {self.limits.max_depth} containers; not scanned "
                "(raise Limits.max_depth if this is expected)"
            )
            return Format.UNKNOWN
        return dispatch(stream, child)


Scanner = Callable[[BinaryIO, ScanContext], None]
Sniffer = Callable[[bytes, BinaryIO], bool]


@dataclass(frozen=True)
class _Registration:
    format: Format
    sniff: Sniffer
    scan: Scanner
    priority: int


_REGISTRY: list[_Registration] = []


def register(fmt: Format, *, sniff: Sniffer, priority: int = 50) -> Callable[[Scanner], Scanner]:
    """Register `scan` for `fmt`. Higher priority sniffers run first (specific before generic).

    Guide: 90 specific containers (pytorch-zip, keras, npz), 80 magic-number formats (npy, gguf, hdf5),
    70 structural formats (safetensors, onnx), 50-52 generic containers (zip 52 before tar 51 before
    compressed 50: a gzip with a zip end record appended is read as a zip by zipfile, so zip goes first),
    30 pickle, 10 text. A sniffer gets the first SNIFF_BYTES bytes and the stream (positioned at 0;
    it may read and seek, dispatch rewinds afterwards). It must not raise on any input.
    """

    def decorate(scan: Scanner) -> Scanner:
        _REGISTRY.append(_Registration(fmt, sniff, scan, priority))
        _REGISTRY.sort(key=lambda r: -r.priority)
        return scan

    return decorate


def registered_formats() -> list[Format]:
    return [r.format for r in _REGISTRY]


def supported_formats() -> str:
    """The formats some scanner understands, in `Format` order: built from the registry, never by hand."""
    registered = set(registered_formats())
    return ", ".join(f.value for f in Format if f in registered)


def detect(stream: BinaryIO) -> tuple[Format, Scanner | None]:
    """The format of `stream` and its scanner, by content. Unknown content has no scanner."""
    stream.seek(0)
    head = stream.read(SNIFF_BYTES)
    if not head:
        return Format.EMPTY, None
    for reg in _REGISTRY:
        stream.seek(0)
        try:
            matched = reg.sniff(head, stream)
        except Exception:  # a sniffer bug must not hide a file: treat as "not mine"
            matched = False
        if matched:
            stream.seek(0)
            return reg.format, reg.scan
    stream.seek(0)
    return Format.UNKNOWN, None


def dispatch(stream: BinaryIO, ctx: ScanContext) -> Format:
    """Detect and scan; every failure mode becomes a finding."""
    try:
        ctx.check()
        fmt, scanner = detect(stream)
    except ScanTimeout:
        ctx.incomplete(f"scan deadline of {ctx.limits.timeout_seconds:.0f}s reached before this file")
        return Format.UNKNOWN
    ctx.shared.formats.append(fmt.value)
    if fmt is Format.EMPTY:
        ctx.add(RuleId.MALFORMED, Severity.MEDIUM, "file is empty (0 bytes): not a model")
        return fmt
    if scanner is None:
        ctx.shared.unrecognised.append(ctx)  # decided in settle_unrecognised, once all models are read
        return fmt
    try:
        scanner(stream, ctx)
    except ScanTimeout:
        ctx.incomplete(f"scan deadline of {ctx.limits.timeout_seconds:.0f}s reached: file partly scanned")
    except MemoryError:
        ctx.incomplete("scanner ran out of memory on this file; treat as hostile")
    except Exception as exc:  # fail closed: a scanner bug is never "clean"
        ctx.incomplete(f"{fmt.value} scanner failed: {type(exc).__name__}: {exc}", error=type(exc).__name__)
    return fmt


def settle_unrecognised(shared: _Shared) -> None:
    """Unrecognised bytes are fail-closed findings, unless a model in the same artifact reads them as
    raw tensor data (ONNX external data): then they are data of that model, which was scanned."""
    for ctx in shared.unrecognised:
        referrer = shared.referenced_data.get(ctx.location)
        if referrer is None:
            ctx.incomplete(
                "unrecognised format: no scanner understands these bytes, so they cannot be shown safe "
                f"(supported: {supported_formats()})"
            )
        else:
            shared.metadata.setdefault("external_data_of", {})[ctx.location] = referrer
    shared.unrecognised.clear()


def sha256_of(stream: BinaryIO, chunk: int = 8 * MiB) -> str:
    digest = hashlib.sha256()
    stream.seek(0)
    buf = bytearray(chunk)
    view = memoryview(buf)
    while n := stream.readinto(buf):  # type: ignore[attr-defined]
        digest.update(view[:n])
    stream.seek(0)
    return digest.hexdigest()


def scan_stream(
    stream: BinaryIO,
    name: str,
    *,
    limits: Limits | None = None,
    sha256: str | None = None,
    size: int | None = None,
) -> ScanReport:
    """Scan one seekable binary stream. Never raises for anything about the content."""
    limits = limits or Limits()
    started = time.monotonic()
    ctx = ScanContext(limits=limits, location=name)
    ctx.shared.deadline = started + limits.timeout_seconds
    if size is None:
        size = stream_size(stream)
    if size > limits.max_file_bytes:
        ctx.incomplete(f"file is {size} bytes, over the {limits.max_file_bytes}-byte limit; not scanned")
        fmt = Format.UNKNOWN
    else:
        fmt = dispatch(stream, ctx)
    settle_unrecognised(ctx.shared)
    ctx.shared.metadata.setdefault("formats", ctx.shared.formats)
    return ScanReport(
        path=name,
        format=fmt,
        size=size,
        sha256=sha256 if sha256 is not None else sha256_of(stream),
        findings=ctx.shared.findings,
        metadata=ctx.shared.metadata,
        scanner_version=SCANNER_VERSION,
        duration_ms=round((time.monotonic() - started) * 1000, 3),
    )


def scan_path(
    path: str | os.PathLike[str],
    *,
    limits: Limits | None = None,
    display_name: str | None = None,
    sha256: str | None = None,
) -> ScanReport:
    """Scan a local file. I/O errors (missing, unreadable) raise OSError for the caller to report."""
    p = Path(path)
    with p.open("rb") as stream:
        return scan_stream(stream, display_name or str(p), limits=limits, sha256=sha256)
