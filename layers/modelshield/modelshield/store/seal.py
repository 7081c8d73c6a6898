"""Scan records sealed with a KMS HMAC key: a record written or edited outside ModelShield is evident.

The scans table is the audit trail of verdicts, and the release path reads its latest record; IAM rights
on the table (dynamodb:PutItem/UpdateItem, which many roles in an account have) would otherwise let
anyone write a record that says ALLOWED. Each record therefore carries `mac`: HMAC-SHA-256, computed by
KMS (GenerateMac) under the stack's scan-record key, over a digest of every other field. The key policy
lets only the functions that record scans call GenerateMac; readers call VerifyMac. The key never leaves
KMS, so a valid MAC means a ModelShield function wrote exactly this record.

What it does not stop: deleting a record (the latest then is an older, genuinely sealed one). That is
why release also checks the vault object itself: a version that became BLOCKED has had its consumer copy
withdrawn and its quarantine copy is encrypted for a purpose no grant can name (release.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from botocore.exceptions import ClientError

from modelshield.models import ScanRecord

ALGORITHM = "HMAC_SHA_256"
DOMAIN = b"modelshield-scan-record-v1\n"  # what is sealed, so a MAC of one kind is never valid as another


def sealed_message(record: ScanRecord) -> bytes:
    """The bytes the MAC covers: a digest of the record's canonical JSON without its `mac` (KMS takes at
    most 4 KiB, and a record with findings is larger)."""
    body = record.model_dump(mode="json", exclude={"mac"})
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return DOMAIN + hashlib.sha256(canonical.encode()).hexdigest().encode()


class ScanSealer:
    """Seals and verifies scan records with one KMS HMAC key."""

    def __init__(self, kms: Any, key_id: str) -> None:
        self.kms = kms
        self.key_id = key_id

    def seal(self, record: ScanRecord) -> ScanRecord:
        mac = self.kms.generate_mac(KeyId=self.key_id, Message=sealed_message(record), MacAlgorithm=ALGORITHM)
        return record.model_copy(update={"mac": base64.b64encode(mac["Mac"]).decode()})

    def verify(self, record: ScanRecord) -> bool:
        """True only if `record` carries a MAC this key made over exactly its current content."""
        if not record.mac:
            return False
        try:
            mac = base64.b64decode(record.mac, validate=True)
        except ValueError:
            return False
        try:
            return bool(
                self.kms.verify_mac(
                    KeyId=self.key_id, Message=sealed_message(record), MacAlgorithm=ALGORITHM, Mac=mac
                )["MacValid"]
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "KMSInvalidMacException":
                return False
            raise  # KMS unreachable or access denied: not "forged", and not "valid" either
