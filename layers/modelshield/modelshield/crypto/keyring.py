"""Data keys: KMS in production, a static AES key for known-answer vectors and benchmarks.

A keyring turns "key id + encryption context" into a data key (plaintext + wrapped copy) and back.
The encryption context is always passed to KMS, so the wrapped key only unwraps for a caller who
presents the same context -- which is also what grants constrain and what CloudTrail records.

Decrypt-side trust: a message names the KMS key its data key is wrapped under, and whoever wrote the
message chose that name. `KmsKeyring(allowed_key_arns=...)` restricts which keys we will ask KMS to use
(strict mode); without it any `aws-kms` key is tried (discovery mode), which is only safe when the
encryption context is also checked against what the caller expects (`streams.check_context`).
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from modelshield.crypto.envelope import (
    DATA_KEY_LENGTH,
    DEFAULT_LIMITS,
    KMS_PROVIDER_ID,
    EncryptedDataKey,
    Header,
    ReadLimits,
    check_context,
    parse_header,
    replace_data_keys,
    serialize_context,
)
from modelshield.errors import KeyAccessError, ModelShieldError


@dataclass(frozen=True)
class DataKey:
    """A data key in both forms. `key_arn` names the wrapping key (the KMS key ARN as KMS returned it)."""

    plaintext: bytes
    encrypted: bytes
    key_arn: str
    provider_id: str = KMS_PROVIDER_ID
    provider_info: bytes | None = None  # None: the ARN itself (KMS); raw keyrings add IV and tag length

    @property
    def encrypted_data_key(self) -> EncryptedDataKey:
        """The header entry for this key."""
        info = self.key_arn.encode("utf-8") if self.provider_info is None else self.provider_info
        return EncryptedDataKey(provider_id=self.provider_id, provider_info=info, ciphertext=self.encrypted)

    def __repr__(self) -> str:  # never print key material
        return f"DataKey(key_arn={self.key_arn!r}, provider_id={self.provider_id!r})"


class Keyring(Protocol):
    """What the streaming and S3 code needs from a key source."""

    def generate(self, key_id: str, context: Mapping[str, str]) -> DataKey: ...

    def wrap(self, plaintext: bytes, key_id: str, context: Mapping[str, str]) -> DataKey: ...

    def unwrap(self, encrypted_keys: Sequence[EncryptedDataKey], context: Mapping[str, str]) -> DataKey: ...


_SNAKE_CASE = {"GenerateDataKey": "generate_data_key", "Encrypt": "encrypt", "Decrypt": "decrypt"}


def _is_kms_key_arn(value: str) -> bool:
    parts = value.split(":", 5)
    return len(parts) == 6 and parts[0] == "arn" and parts[2] == "kms" and parts[5].startswith("key/")


def _client_error(exc: Exception, operation: str, key: str) -> ModelShieldError:
    from modelshield.aws import unreachable  # botocore is present whenever a KMS client is

    if (down := unreachable(exc)) is not None:
        return down  # no endpoint answered: not a refusal by KMS
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    code = error.get("Code") or type(exc).__name__
    message = error.get("Message") or str(exc)
    return KeyAccessError(f"KMS {operation} with key {key} was refused: {code}: {message}")


class KmsKeyring:
    """KMS GenerateDataKey / Encrypt / Decrypt with the encryption context. The client is passed in."""

    def __init__(
        self,
        kms_client: Any,
        *,
        allowed_key_arns: Collection[str] | None = None,
        grant_tokens: Sequence[str] = (),
    ) -> None:
        self._kms = kms_client
        self._allowed = frozenset(allowed_key_arns) if allowed_key_arns is not None else None
        self._grant_tokens = list(grant_tokens)

    def _call(self, operation: str, key: str, **params: Any) -> dict[str, Any]:
        """Call a KMS API by its name (e.g. "GenerateDataKey"); refusals become KeyAccessError."""
        from botocore.exceptions import BotoCoreError, ClientError  # boto3 is always present with a client

        if self._grant_tokens:
            params["GrantTokens"] = self._grant_tokens
        method = getattr(self._kms, _SNAKE_CASE[operation])
        try:
            return dict(method(**params))
        except (ClientError, BotoCoreError) as exc:
            raise _client_error(exc, operation, key) from None

    def _data_key(
        self, response: Mapping[str, Any], plaintext: bytes, operation: str, blob: bytes
    ) -> DataKey:
        key_arn = str(response.get("KeyId", ""))
        if not _is_kms_key_arn(key_arn):
            raise KeyAccessError(f"KMS {operation} returned {key_arn!r}, not a key ARN")
        if len(plaintext) != DATA_KEY_LENGTH or not blob:
            raise KeyAccessError(f"KMS {operation} returned a malformed data key")
        return DataKey(plaintext=plaintext, encrypted=bytes(blob), key_arn=key_arn)

    def generate(self, key_id: str, context: Mapping[str, str]) -> DataKey:
        """A fresh 256-bit data key, wrapped under `key_id`; the EDK records the ARN KMS returns."""
        response = self._call(
            "GenerateDataKey",
            key_id,
            KeyId=key_id,
            NumberOfBytes=DATA_KEY_LENGTH,
            EncryptionContext=dict(context),
        )
        plaintext = bytes(response.get("Plaintext", b""))
        return self._data_key(response, plaintext, "GenerateDataKey", response.get("CiphertextBlob", b""))

    def wrap(self, plaintext: bytes, key_id: str, context: Mapping[str, str]) -> DataKey:
        """Wrap an existing data key under `key_id` (re-wrap, or header-after-body encryption)."""
        response = self._call(
            "Encrypt", key_id, KeyId=key_id, Plaintext=plaintext, EncryptionContext=dict(context)
        )
        return self._data_key(response, plaintext, "Encrypt", response.get("CiphertextBlob", b""))

    def unwrap(self, encrypted_keys: Sequence[EncryptedDataKey], context: Mapping[str, str]) -> DataKey:
        """Try each `aws-kms` key (allowed ones only, in strict mode) until KMS decrypts one."""
        failures: list[str] = []
        for edk in encrypted_keys:
            arn = edk.key_arn
            if arn is None:
                continue
            if not _is_kms_key_arn(arn):
                failures.append(f"{arn!r} is not a KMS key ARN")
                continue
            if self._allowed is not None and arn not in self._allowed:
                failures.append(f"{arn} is not an allowed key")
                continue
            params: dict[str, Any] = {"CiphertextBlob": edk.ciphertext, "KeyId": arn}
            if context:
                params["EncryptionContext"] = dict(context)
            try:
                response = self._call("Decrypt", arn, **params)
            except KeyAccessError as exc:
                failures.append(str(exc))
                continue
            if response.get("KeyId") != arn:
                failures.append(f"KMS answered for {response.get('KeyId')!r} instead of {arn}")
                continue
            plaintext = bytes(response.get("Plaintext", b""))
            return self._data_key(response, plaintext, "Decrypt", edk.ciphertext)
        detail = "; ".join(failures) if failures else "the message has no aws-kms encrypted data key"
        raise KeyAccessError(f"no data key could be decrypted: {detail}")

    def decrypt(self, encrypted_keys: Sequence[EncryptedDataKey], context: Mapping[str, str]) -> bytes:
        return self.unwrap(encrypted_keys, context).plaintext


# The raw AES keyring format of the official SDKs: provider info = key name || tag bits || IV length || IV.
_RAW_INFO_TAIL = struct.Struct(">II12s")


class StaticKeyring:
    """A local AES-256 wrapping key, wire-compatible with the SDK's raw AES master key (GCM, IV 12, tag 16).

    For known-answer vectors and benchmarks only (no KMS, no audit trail): production uses `KmsKeyring`.
    The wrap is AES-GCM over the data key with the serialized encryption context as AAD.
    """

    def __init__(self, wrapping_key: bytes, *, provider_id: str, key_name: str) -> None:
        if len(wrapping_key) != 32:
            raise KeyAccessError("a static wrapping key must be 32 bytes")
        self._aead = AESGCM(wrapping_key)
        self._provider_id = provider_id
        self._key_name = key_name.encode("utf-8")
        self._name = key_name

    def generate(self, key_id: str, context: Mapping[str, str]) -> DataKey:
        return self.wrap(os.urandom(DATA_KEY_LENGTH), key_id, context)

    def wrap(self, plaintext: bytes, key_id: str, context: Mapping[str, str]) -> DataKey:
        iv = os.urandom(12)
        wrapped = self._aead.encrypt(iv, plaintext, serialize_context(context))
        return DataKey(
            plaintext=plaintext,
            encrypted=wrapped,
            key_arn=self._name,
            provider_id=self._provider_id,
            provider_info=self._key_name + _RAW_INFO_TAIL.pack(128, 12, iv),
        )

    def unwrap(self, encrypted_keys: Sequence[EncryptedDataKey], context: Mapping[str, str]) -> DataKey:
        for edk in encrypted_keys:
            if edk.provider_id != self._provider_id or not edk.provider_info.startswith(self._key_name):
                continue
            tail = edk.provider_info[len(self._key_name) :]
            if len(tail) != _RAW_INFO_TAIL.size:
                continue
            tag_bits, iv_length, iv = _RAW_INFO_TAIL.unpack(tail)
            if tag_bits != 128 or iv_length != 12:
                continue
            try:
                plaintext = self._aead.decrypt(iv, edk.ciphertext, serialize_context(context))
            except InvalidTag:
                continue
            if len(plaintext) == DATA_KEY_LENGTH:
                return DataKey(plaintext, edk.ciphertext, self._name, self._provider_id, edk.provider_info)
        raise KeyAccessError(f"no encrypted data key in the message opens with static key {self._name!r}")

    def decrypt(self, encrypted_keys: Sequence[EncryptedDataKey], context: Mapping[str, str]) -> bytes:
        return self.unwrap(encrypted_keys, context).plaintext


@dataclass(frozen=True)
class RewrappedHeader:
    """A re-wrapped header. Frames start at `old_length` in the old object and follow `header` in the new."""

    header: bytes
    old_length: int
    message_id: str
    old_key_arns: tuple[str, ...]
    new_key_arn: str

    @property
    def new_length(self) -> int:
        return len(self.header)


def rewrap_header(
    header_bytes: bytes,
    *,
    keyring: Keyring,
    new_key_id: str,
    expected_context: Mapping[str, str] | None = None,
    limits: ReadLimits | None = None,
) -> RewrappedHeader:
    """Re-wrap a message's data key under `new_key_id`; the frames after the header stay valid unchanged.

    The header tag covers the list of wrapped keys, so recomputing it needs the plaintext data key:
    KMS ReEncrypt would spare one round trip but not the Decrypt permission, hence Decrypt + Encrypt.
    `header_bytes` may extend past the header (e.g. the first ranged GET of the object).
    """
    header, length = parse_header(io.BytesIO(header_bytes), limits or DEFAULT_LIMITS)
    check_context(header.context, expected_context)
    old = keyring.unwrap(header.encrypted_data_keys, header.context)
    new = keyring.wrap(old.plaintext, new_key_id, header.context)
    rewrapped: Header = replace_data_keys(header, old.plaintext, (new.encrypted_data_key,))
    old_arns = tuple(a for a in (edk.key_arn for edk in header.encrypted_data_keys) if a is not None)
    return RewrappedHeader(
        header=rewrapped.to_bytes(),
        old_length=length,
        message_id=header.message_id.hex(),
        old_key_arns=old_arns,
        new_key_arn=new.key_arn,
    )
