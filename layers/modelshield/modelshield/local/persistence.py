"""The local stack's state on disk: moto keeps everything in memory, so a crash of `local up` used to
lose every object, record and audit item. This module snapshots moto's backends into the state
directory and restores them on the next start.

How: moto server runs in the daemon's own process, so its backends (one `BackendDict` per service) are
plain Python objects. They are pickled with a pickler that knows the few things moto holds that pickle
cannot (locks and conditions are recreated empty; KMS private keys go through PEM), written to a temp
file and renamed over `moto-state.pickle`, so a snapshot is whole or absent, never torn. The daemon takes
one every `MODELSHIELD_SNAPSHOT_SECONDS` (default 2) when the stack did something since the last, and
on `local down`; a `kill -9` loses at most the last interval. A snapshot pickles the whole state, so
its cost grows with it; the interval stretches to keep snapshots under a tenth of the time
(`next_wait`): at 5,000 uploads a snapshot took ~1.5 s, and snapshots every 5 s had taken a third of the
stack's CPU and halved its throughput. Restoring replaces the provisioned
(empty) backends with the saved ones; resource names are deterministic, so the environment stays valid.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import threading
import time
from pathlib import Path
from typing import Any

# The services the template's resources (and the stack's own calls) live in.
SERVICES = ("s3", "sqs", "dynamodb", "kms", "sts", "iam", "events", "stepfunctions", "cloudwatch", "logs")
SNAPSHOT_NAME = "moto-state.pickle"
_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


def _load_pem(pem: bytes) -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(pem, password=None)


class _StatePickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        if isinstance(obj, _LOCK_TYPES[1]):
            return (threading.RLock, ())
        if isinstance(obj, _LOCK_TYPES[0]):
            return (threading.Lock, ())
        if isinstance(obj, threading.Condition):
            return (threading.Condition, ())
        if isinstance(obj, threading.Event):
            return (threading.Event, ())
        if isinstance(obj, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            pem = obj.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            return (_load_pem, (pem,))
        return NotImplemented


def _backends() -> dict[str, Any]:
    from moto.backends import get_backend

    found = {}
    for name in SERVICES:
        with contextlib.suppress(Exception):  # a service this moto build lacks is simply not saved
            found[name] = get_backend(name)  # type: ignore[call-overload]
    return found


def snapshot(path: Path, *, attempts: int = 5) -> int:
    """Write every backend's state to `path` atomically; returns the bytes written. moto's server threads
    may change a dict while it is pickled: that attempt is retried."""
    last: Exception | None = None
    for _ in range(attempts):
        buffer = io.BytesIO()
        try:
            _StatePickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(
                {name: dict(backend) for name, backend in _backends().items()}
            )
        except RuntimeError as exc:  # "dictionary changed size during iteration"
            last = exc
            continue
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as out:
            out.write(buffer.getvalue())
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
        return buffer.tell()
    raise RuntimeError(f"could not snapshot the local stack after {attempts} attempts: {last}")


def restore(path: Path) -> bool:
    """Replace moto's backends with the ones saved at `path`. False when there is no snapshot."""
    if not path.is_file():
        return False
    with open(path, "rb") as source:
        saved: dict[str, dict[str, Any]] = pickle.load(source)
    backends = _backends()
    for name, accounts in saved.items():
        if name in backends:
            backends[name].clear()
            backends[name].update(accounts)
    return True


_READS = ("Get", "Head", "List", "Describe", "Query", "Scan", "Receive", "BatchGet")


class ChangeCounter:
    """WSGI middleware around moto server counting requests that may change state (everything but reads
    and polls), so an idle stack is not snapshotted over and over."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.changes = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        method = environ.get("REQUEST_METHOD", "GET")
        target = environ.get("HTTP_X_AMZ_TARGET", "").rpartition(".")[2]
        action = target or _query_action(environ.get("QUERY_STRING", ""))
        if method not in ("GET", "HEAD") and not action.startswith(_READS):
            self.changes += 1
        return self.app(environ, start_response)


def _query_action(query: str) -> str:
    for part in query.split("&"):
        if part.startswith("Action="):
            return part[len("Action=") :]
    return ""


MAX_SHARE = 0.1  # of the time spent snapshotting, at most


def next_wait(interval: float, took: float) -> float:
    """Seconds until the next snapshot: `interval`, or longer when the last one took so long that
    snapshots would take more than MAX_SHARE of the time."""
    return max(interval, took * (1 - MAX_SHARE) / MAX_SHARE)


class Snapshotter:
    """Takes a snapshot every `interval` seconds while `dirty()` says something happened, and on stop."""

    def __init__(self, path: Path, *, interval: float, dirty: Any) -> None:
        self.path, self.interval, self.dirty = path, interval, dirty
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="snapshot", daemon=True)
        self.taken = 0
        self.longest_seconds = 0.0  # the slowest snapshot so far (benchmarks report it)
        self.errors: list[str] = []

    def start(self) -> Snapshotter:
        self._thread.start()
        return self

    def _run(self) -> None:
        wait = self.interval
        while not self._stop.wait(wait):
            if self.dirty():
                started = time.monotonic()
                self.take()
                took = time.monotonic() - started
                self.longest_seconds = max(self.longest_seconds, took)
                wait = next_wait(self.interval, took)

    def take(self) -> None:
        try:
            snapshot(self.path)
            self.taken += 1
        except Exception as exc:
            self.errors.append(str(exc))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.take()
