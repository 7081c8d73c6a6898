"""The counter deltas and the chain check, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime

from modelshield.audit import GENESIS_HASH, AuditRecord, Decision
from modelshield.dashboard.chain import ChainState, chain_step, verify_tail
from modelshield.dashboard.counters import Delta, artifact_delta, audit_delta, scan_delta

T = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
KEY = "arn:aws:kms:us-east-1:123456789012:key/k1"


def artifact(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "artifact_id": "b/m.pt", "version_id": "v1", "encryption_state": "ENCRYPTED", "size": 100,
        "ciphertext_size": 180, "group": "default", "verdict": "ALLOWED", "wrapping_key_arn": KEY,
        "data_key_created_at": "2026-11-30T08:00:00Z",
    }  # fmt: skip
    base.update(over)
    return base


def test_a_new_encrypted_version_adds_its_ciphertext_bytes_everywhere() -> None:
    delta = artifact_delta(None, artifact(), changed_at=T).nonzero()
    assert delta[("totals", "state#ENCRYPTED")] == {"objects": 1, "bytes": 180}
    assert delta[("totals", "verdict#default#ALLOWED")] == {"objects": 1}
    assert delta[("totals", f"key#{KEY}")] == {"objects": 1}
    assert delta[("dkage", f"{KEY}#2026-11-30")] == {"objects": 1}
    assert delta[("capacity", "2026-12-01")] == {"encrypted_bytes": 180, "encrypted_objects": 1}


def test_a_verdict_change_moves_one_count_and_leaves_the_rest() -> None:
    delta = artifact_delta(artifact(), artifact(verdict="ALLOWED_WITH_WARNINGS"), changed_at=T).nonzero()
    assert delta == {
        ("totals", "verdict#default#ALLOWED"): {"objects": -1},
        ("totals", "verdict#default#ALLOWED_WITH_WARNINGS"): {"objects": 1},
    }


def test_quarantining_moves_bytes_between_states_and_history() -> None:
    old, new = artifact(), artifact(encryption_state="QUARANTINED", verdict="BLOCKED", ciphertext_size=190)
    delta = artifact_delta(old, new, changed_at=T).nonzero()
    assert delta[("totals", "state#ENCRYPTED")] == {"objects": -1, "bytes": -180}
    assert delta[("totals", "state#QUARANTINED")] == {"objects": 1, "bytes": 190}
    assert delta[("capacity", "2026-12-01")] == {
        "encrypted_bytes": -180, "encrypted_objects": -1, "quarantined_bytes": 190, "quarantined_objects": 1,
    }  # fmt: skip
    assert ("totals", f"key#{KEY}") not in delta  # still wrapped by the same key


def test_a_removed_version_takes_everything_back() -> None:
    added = artifact_delta(None, artifact(), changed_at=T)
    removed = artifact_delta(artifact(), None, changed_at=T)
    assert not Delta().merge(added).merge(removed)


def test_plaintext_versions_count_their_upload_size_and_no_key() -> None:
    delta = artifact_delta(
        None, artifact(encryption_state="FAILED", wrapping_key_arn=None), changed_at=T
    ).nonzero()
    assert delta[("totals", "state#FAILED")] == {"objects": 1, "bytes": 100}
    assert not any(pk == "dkage" or sk.startswith("key#") for pk, sk in delta)


def test_scans_count_rule_failures_and_blocked_uploads_by_hour() -> None:
    scan = {
        "verdict": "BLOCKED", "trigger": "upload", "scanned_at": "2026-12-01T10:05:00+00:00",
        "rules": [{"rule": "MS-CODE-EXEC", "status": "FAIL", "blocking": True},
                  {"rule": "MS-LICENSE", "status": "FAIL", "blocking": False},
                  {"rule": "MS-FORMAT-SAFE", "status": "PASS", "blocking": True}],
    }  # fmt: skip
    delta = scan_delta(scan).nonzero()
    assert delta[("totals", "rule#MS-CODE-EXEC#blocking")] == {"failures": 1}
    assert delta[("totals", "rule#MS-LICENSE#nonblocking")] == {"failures": 1}
    assert ("totals", "rule#MS-FORMAT-SAFE#blocking") not in delta
    assert delta[("hourly", "2026-12-01T10")] == {"blocked_uploads": 1}
    rescan = scan_delta({**scan, "trigger": "rescan"}).nonzero()
    assert ("hourly", "2026-12-01T10") not in rescan  # a rescan is not an upload


def test_decrypt_records_count_by_decision_and_other_actions_do_not() -> None:
    denied = audit_delta(
        {"action": "artifact.decrypt", "decision": "DENIED", "at": "2026-12-01T10:00:00.000000Z"}
    )
    assert denied.nonzero()[("hourly", "2026-12-01T10")] == {"decrypt_denied": 1}
    kms = audit_delta({"action": "kms.Decrypt", "decision": "ALLOWED", "at": "2026-12-01T11:00:00.000000Z"})
    assert kms.nonzero()[("totals", "decrypts")] == {"allowed": 1}
    other = audit_delta(
        {"action": "access.approve", "decision": "DENIED", "at": "2026-12-01T10:00:00.000000Z"}
    )
    assert ("totals", "decrypts") not in other.nonzero()


def _chain(n: int) -> list[AuditRecord]:
    records, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        record = AuditRecord(seq=seq, event_id=f"e{seq}", at=T, action="access.request",
                             decision=Decision.ALLOWED, prev_hash=prev).sealed()  # fmt: skip
        records.append(record)
        prev = record.hash
    return records


def test_a_sound_chain_verifies_link_by_link_and_replays_change_nothing() -> None:
    records = _chain(4)
    state, findings = verify_tail(ChainState(), records)
    assert findings == [] and state.seq == 4 and state.records == 4
    again, more = chain_step(state, records[1])
    assert again == state and more == []


def test_a_gap_an_edit_and_a_relink_are_each_found() -> None:
    records = _chain(5)
    _, gap = verify_tail(ChainState(), [records[0], records[2]])
    assert [f.kind for f in gap] == ["missing"]
    edited = records[1].model_copy(update={"reason": "changed"})
    _, found = verify_tail(ChainState(), [records[0], edited])
    assert [f.kind for f in found] == ["edited"]
    relinked = records[1].model_copy(update={"prev_hash": "f" * 64}).sealed()
    _, found = verify_tail(ChainState(), [records[0], relinked])
    assert [f.kind for f in found] == ["relinked"]
