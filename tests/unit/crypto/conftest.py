"""Fixtures for the envelope tests: a static keyring, the reference library, and moto (KMS + S3)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from modelshield.crypto.keyring import StaticKeyring

from tests.builders import moto_account, moto_credentials
from tests.unit.crypto.envelope_helpers import Aws, raw_provider, sdk_client, static_keyring


@pytest.fixture
def keyring() -> StaticKeyring:
    return static_keyring()


@pytest.fixture
def sdk() -> Any:
    return sdk_client()


@pytest.fixture
def sdk_raw_provider() -> Any:
    return raw_provider()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    """moto in-process: two KMS keys and fast S3 clients (request checksums only when required)."""
    moto_credentials(monkeypatch)
    with moto_account() as (s3, kms):
        key_arn = kms.create_key(Description="modelshield test key")["KeyMetadata"]["Arn"]
        other = kms.create_key(Description="modelshield rotation target")["KeyMetadata"]["Arn"]
        yield Aws(kms=kms, s3=s3, key_arn=key_arn, other_key_arn=other)
