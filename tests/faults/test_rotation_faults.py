"""The rotation run under injected faults and next to the pipeline: one failure at each step of a re-key,
once and persistently, then the next scheduled run; and rotation of versions that are no longer the newest.
Invariants: every artifact's recorded vault version exists and decrypts to its recorded SHA-256, no vault
version is referenced by no record, consumers' key holds the newest released version (harness.py)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from modelshield.crypto.keyring import KmsKeyring
from modelshield.crypto.s3 import decrypt_s3_to
from modelshield.crypto.streams import Expectation
from modelshield.local.samples import benign_checkpoint
from modelshield.local.stack import LocalContext, load_handler
from modelshield.models import ArtifactState, utcnow

from tests.builders import MotoStack
from tests.faults.harness import (
    Faults,
    artifact_items,
    bucket_is,
    check_invariants,
    drain,
    table_is,
    vault_versions,
)


def scanned(stack: MotoStack, *bodies: tuple[str, bytes]) -> dict[tuple[str, str], bytes]:
    """Uploads through the pipeline, each released into the vault."""
    uploads = {(key, stack.put(key, body)): body for key, body in bodies}
    drain(stack)
    return uploads


def age_data_keys(stack: MotoStack, days: int = 400) -> None:
    """Make every data key older than the default group's limit (365 days): the next run re-keys."""
    table = stack.table("ARTIFACTS_TABLE")
    for state in artifact_items(stack):
        table.update_item(
            Key={"artifact_id": state["artifact_id"], "version_id": state["version_id"]},
            UpdateExpression="SET data_key_created_at = :t",
            ExpressionAttributeValues={":t": (utcnow() - timedelta(days=days)).isoformat()},
        )


def rotate(stack: MotoStack, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """One scheduled run of the RotateFunction handler, with its own environment from the template."""
    spec = stack.provisioned.functions["RotateFunction"]
    for name, value in spec.environment.items():
        monkeypatch.setenv(name, value)
    handler = load_handler(spec)  # a fresh container each run
    return handler({"source": "aws.events", "detail": {}}, LocalContext("RotateFunction", spec.memory, 900))  # type: ignore[no-any-return]


def assert_every_record_decrypts(stack: MotoStack, tmp_path: Path) -> None:
    for state in artifact_items(stack):
        out = tmp_path / "check.bin"
        sha = decrypt_s3_to(
            state["vault_bucket"],
            state["vault_key"],
            state["vault_version_id"],
            out,
            s3=stack.s3,
            expect=Expectation(KmsKeyring(stack.kms), None),
        )
        out.unlink()
        assert sha == state["sha256"], f"{state['key']}: its vault copy no longer decrypts to its SHA-256"


def data_key_ages(stack: MotoStack) -> list[int]:
    states = [ArtifactState.model_validate(s) for s in artifact_items(stack)]
    return sorted((utcnow() - s.data_key_created_at).days for s in states if s.data_key_created_at)


# -- a failure at each step of a re-key, once: nothing lost, the next run finishes --------------------

STEPS = {
    "kms-generate-data-key": ("kms", "GenerateDataKey", None),
    "kms-decrypt": ("kms", "Decrypt", None),
    "s3-get-old-version": ("s3", "GetObject", "vault"),
    "s3-put-new-version": ("s3", "PutObject", "vault"),
    "artifacts-table-write": ("dynamodb", "PutItem", "artifacts"),
    "s3-delete-old-version": ("s3", "DeleteObject", "vault"),
}


@pytest.mark.parametrize("step", list(STEPS), ids=list(STEPS))
@pytest.mark.parametrize("times", [1, None], ids=["once", "persistent"])
def test_a_failed_rekey_step_loses_nothing_and_the_next_run_finishes(
    stack: MotoStack, faults: Faults, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, step: str, times: Any
) -> None:
    # Given two released artifacts whose data keys are past their age limit
    uploads = scanned(stack, ("models/a.pt", benign_checkpoint("a")), ("models/b.pt", benign_checkpoint("b")))
    age_data_keys(stack)
    service, operation, target = STEPS[step]
    when = {"vault": bucket_is(stack.vault), "artifacts": table_is(stack.env["ARTIFACTS_TABLE"])}.get(target)  # type: ignore[arg-type]

    # When a rotation run meets a failure at that step (once, or on every call)
    faults.fail(service, operation, times=times, when=when)
    first = rotate(stack, monkeypatch)

    # Then the run reports what failed, and nothing is lost: every record's vault copy decrypts
    assert first["failures"], f"{step}: a failed step was not reported"
    faults.clear()  # (the checks below read through the same clients)
    check_invariants(stack, uploads)
    assert_every_record_decrypts(stack, tmp_path)

    # When the next scheduled run comes
    second = rotate(stack, monkeypatch)

    # Then every data key is fresh, one vault version per artifact, and every copy decrypts
    assert second["failures"] == [] and second["complete"]
    assert data_key_ages(stack) == [0, 0]
    check_invariants(stack, uploads)
    assert_every_record_decrypts(stack, tmp_path)
    assert len(vault_versions(stack)) == 2, "a superseded vault version (under the old data key) was kept"


# -- rotation next to the pipeline: superseded versions and consumers' key ------------------------------


def test_rotating_a_superseded_version_never_rolls_consumers_back(
    stack: MotoStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given two released versions of one key, the newer one at consumers' key
    uploads = scanned(stack, ("models/m.pt", benign_checkpoint("v1")))
    uploads |= scanned(stack, ("models/m.pt", benign_checkpoint("v2")))
    check_invariants(stack, uploads)

    # When a rotation run re-keys both (their data keys are old)
    age_data_keys(stack)
    report = rotate(stack, monkeypatch)

    # Then both were re-keyed and consumers' key still holds the newer version
    assert report["failures"] == [] and report["counts"]["rekey"] == 2
    assert data_key_ages(stack) == [0, 0]
    check_invariants(stack, uploads)
    assert_every_record_decrypts(stack, tmp_path)


def test_a_rotation_of_the_current_version_waits_for_the_artifacts_lease(
    stack: MotoStack, faults: Faults, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given a released version at consumers' key whose data key is old, and a newer upload of that key
    uploads = scanned(stack, ("models/m.pt", benign_checkpoint("v1")))
    age_data_keys(stack)
    newer = stack.put("models/m.pt", benign_checkpoint("v2"))
    uploads[("models/m.pt", newer)] = b""
    artifacts = stack.table("ARTIFACTS_TABLE")
    pipeline = threading.Thread(target=lambda: drain(stack), name="pipeline")

    def newer_recorded() -> bool:
        key = {"artifact_id": f"{stack.ingest}/models/m.pt", "version_id": newer}
        return "Item" in artifacts.get_item(Key=key)

    def pipeline_runs_meanwhile(_: dict[str, Any]) -> None:
        # The rotation has decrypted the old copy and asks KMS for its new data key: now the pipeline
        # processes v2. Without a lease it writes and records v2 first, and rotation's copy of v1 lands on
        # top of it; with the lease it waits (5 s here) until rotation is done.
        if threading.current_thread() is pipeline or pipeline.ident is not None:
            return
        pipeline.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not newer_recorded():
            time.sleep(0.05)

    faults.on("kms", "GenerateDataKey", pipeline_runs_meanwhile)

    # When rotation re-keys v1 while the pipeline processes v2
    report = rotate(stack, monkeypatch)
    pipeline.join(timeout=120)
    faults.clear()
    drain(stack)

    # Then v1 was re-keyed, and consumers' key holds v2, the newest; every record decrypts
    assert report["counts"]["rekey"] == 1 and report["failures"] == []
    check_invariants(stack, uploads)
    assert_every_record_decrypts(stack, tmp_path)
