"""Narrow exceptions, one per failure. Each message says what was wrong, where, and what to do."""

from __future__ import annotations


class ModelShieldError(Exception):
    """Base of every error this package raises on purpose. The CLI prints these without a traceback."""

    exit_code = 2


class UsageError(ModelShieldError):
    """The caller asked for something malformed (bad flag, bad YAML, bad argument)."""


class ArtifactNotFound(ModelShieldError):
    """The object, version or record asked for does not exist."""


class StackNotRunning(ModelShieldError):
    """The local stack is not up (no state file, or the endpoint does not answer)."""


class ConfigError(ModelShieldError):
    """The environment or a configuration file is invalid."""


class EnvelopeError(ModelShieldError):
    """A ciphertext is malformed, truncated, tampered with, or its context does not match."""


class KeyAccessError(ModelShieldError):
    """KMS refused a data-key operation (no grant, expired grant, wrong key)."""


class IntegrityError(ModelShieldError):
    """A stored object does not match what was written (checksum or size mismatch)."""


class AccessDenied(ModelShieldError):
    """The caller is not allowed to do this (e.g. approve their own access request)."""
