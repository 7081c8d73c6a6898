"""Settings from the environment: one small pydantic model per concern, validated once per cold start."""

from __future__ import annotations

import os
from functools import lru_cache

from pydantic import BaseModel, ValidationError

from modelshield.errors import ConfigError


def _from_env(model: type[BaseModel], mapping: dict[str, str]) -> BaseModel:
    """Build `model` from environment variables named in `mapping` (field -> ENV_NAME)."""
    values = {field: os.environ[env] for field, env in mapping.items() if env in os.environ}
    try:
        return model(**values)
    except ValidationError as exc:
        missing = ", ".join(mapping[str(e["loc"][0])] for e in exc.errors() if e["loc"])
        raise ConfigError(f"missing or invalid environment variables: {missing}") from None


class Tables(BaseModel):
    scans: str
    artifacts: str
    idempotency: str
    groups: str


class Buckets(BaseModel):
    ingest: str
    vault: str


class ScanSettings(BaseModel):
    """ScanFunction: where artifacts come from and go, which key protects them, and scan limits."""

    tables: Tables
    buckets: Buckets
    kms_key_id: str  # the default group key (alias or ARN)
    quarantine_prefix: str = "quarantine/"
    frame_length: int = 4 * 1024 * 1024
    scan_timeout_seconds: float = 600.0
    workdir: str = "/tmp"  # noqa: S108 - Lambda's ephemeral storage


TABLE_ENV = {
    "scans": "SCANS_TABLE",
    "artifacts": "ARTIFACTS_TABLE",
    "idempotency": "IDEMPOTENCY_TABLE",
    "groups": "GROUPS_TABLE",
}
BUCKET_ENV = {"ingest": "INGEST_BUCKET", "vault": "VAULT_BUCKET"}


@lru_cache(maxsize=1)
def scan_settings() -> ScanSettings:
    tables = _from_env(Tables, TABLE_ENV)
    buckets = _from_env(Buckets, BUCKET_ENV)
    extra: dict[str, object] = {}
    if "SCAN_TIMEOUT_SECONDS" in os.environ:
        extra["scan_timeout_seconds"] = float(os.environ["SCAN_TIMEOUT_SECONDS"])
    if "FRAME_LENGTH" in os.environ:
        extra["frame_length"] = int(os.environ["FRAME_LENGTH"])
    if "WORKDIR" in os.environ:
        extra["workdir"] = os.environ["WORKDIR"]
    if "KMS_KEY_ID" not in os.environ:
        raise ConfigError("missing environment variable KMS_KEY_ID (the vault's KMS key alias or ARN)")
    return ScanSettings(tables=tables, buckets=buckets, kms_key_id=os.environ["KMS_KEY_ID"], **extra)
