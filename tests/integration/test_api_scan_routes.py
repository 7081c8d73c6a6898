"""ApiFunction's groups, verdicts and rescans routes, on the template's resources under moto."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from modelshield.local.samples import benign_checkpoint
from modelshield.local.stack import LocalContext, load_handler
from modelshield.store.scans import ScanStore

from tests.builders import EVENTS, MotoStack

ENGINEER = "arn:aws:sts::123456789012:assumed-role/ModelShieldSecurityEngineer/alice"
CONSUMER = "arn:aws:sts::123456789012:assumed-role/InferenceService/i-0abc"


@pytest.fixture
def api(moto_stack: MotoStack, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in moto_stack.provisioned.functions["ApiFunction"].environment.items():
        monkeypatch.setenv(name, value)
    handler = load_handler(moto_stack.provisioned.functions["ApiFunction"])

    def call(
        method: str, path: str, *, user: str = ENGINEER, query: dict | None = None, body: Any = None
    ) -> tuple:
        event = copy.deepcopy(json.loads((EVENTS / "api_access_list.json").read_text()))
        event.update(
            resource=path,
            path=path,
            httpMethod=method,
            queryStringParameters=query,
            multiValueQueryStringParameters={k: [v] for k, v in (query or {}).items()} or None,
            body=None if body is None else json.dumps(body),
        )
        event["requestContext"].update(resourcePath=path, httpMethod=method)
        event["requestContext"]["identity"]["userArn"] = user
        response = handler(event, LocalContext("ApiFunction", 512, 29))
        return response["statusCode"], json.loads(response["body"] or "null")

    return call


def test_the_latest_verdict_is_served_and_an_unknown_artifact_is_404(moto_stack: MotoStack, api: Any) -> None:
    # Given a scanned artifact
    moto_stack.put("partner/acme/model.pt", benign_checkpoint())
    moto_stack.deliver_queued()
    artifact = f"{moto_stack.ingest}/partner/acme/model.pt"

    # When its verdict is asked for, Then the stored record comes back
    status, body = api("GET", "/verdicts", query={"artifact_id": artifact})
    assert (
        status == 200 and body["group"] == "Partner-S3-Audit" and body["verdict"] == "ALLOWED_WITH_WARNINGS"
    )
    status, body = api("GET", "/verdicts", query={"artifact_id": f"{moto_stack.ingest}/nope.pt"})
    assert status == 404 and "no scan recorded" in body["message"]


def test_only_a_security_engineer_changes_groups_and_bad_yaml_says_where(
    moto_stack: MotoStack, api: Any
) -> None:
    yaml_text = "groups:\n  - name: Partner-S3-Audit\n    rules:\n      MS-FORMAT-SAFE: {blocking: true}\n"
    # Given a consumer, When it tries to change a group, Then it is refused
    status, body = api("PUT", "/groups", user=CONSUMER, body={"yaml": yaml_text})
    assert status == 403 and "Security Engineer" in body["message"]
    # When a security engineer sends broken YAML, Then the error names the line and field
    status, body = api(
        "PUT", "/groups", body={"yaml": yaml_text.replace("blocking: true", "blocking: maybe")}
    )
    assert status == 400 and ":4:" in body["message"] and "blocking" in body["message"]
    # When the YAML is valid, Then it is applied and versioned
    status, body = api("PUT", "/groups", body={"yaml": yaml_text})
    assert status == 200 and body["applied"][0]["name"] == "Partner-S3-Audit"
    status, body = api("GET", "/groups/Partner-S3-Audit")
    assert status == 200 and body["rules"]["MS-FORMAT-SAFE"]["blocking"] is True


def test_a_rescan_is_queued_for_the_rescan_function_and_recorded(moto_stack: MotoStack, api: Any) -> None:
    # Given an artifact scanned once
    version = moto_stack.put("partner/acme/model.pt", benign_checkpoint())
    moto_stack.deliver_queued()

    # When a consumer asks for a rescan, Then it is refused; when an engineer does, it is queued
    assert api("POST", "/rescans", user=CONSUMER, body={"group": "Partner-S3-Audit"})[0] == 403
    status, body = api("POST", "/rescans", body={"group": "Partner-S3-Audit"})
    assert status == 200 and body["queued"] == 1

    # Then the RescanFunction picks it up (from the vault copy) and records a rescan of the same version
    assert moto_stack.deliver_rescans()["batchItemFailures"] == []
    latest = ScanStore(moto_stack.env["SCANS_TABLE"], moto_stack.dynamodb).latest(
        f"{moto_stack.ingest}/partner/acme/model.pt"
    )
    assert latest is not None and latest.trigger == "rescan" and latest.version_id == version


def test_a_groups_document_based_on_a_stale_version_changes_nothing(moto_stack: MotoStack, api: Any) -> None:
    # Given a group stored at version 1
    first = "groups:\n  - name: Vision\n    rules:\n      MS-LICENSE: {blocking: false}\n"
    assert api("PUT", "/groups", body={"yaml": first})[0] == 200
    # When a document says it edits version 3 of it, alongside a brand-new group
    stale = (
        "groups:\n  - name: NewTeam\n  - name: Vision\n    version: 3\n    rules:\n"
        "      MS-LICENSE: {blocking: true}\n"
    )
    status, body = api("PUT", "/groups", body={"yaml": stale})
    # Then it is refused as a conflict and nothing at all is written
    assert status == 409 and "says version 3 but the stored one is version 1" in body["message"]
    assert api("GET", "/groups/NewTeam")[0] == 404
    assert api("GET", "/groups/Vision")[1]["rules"]["MS-LICENSE"]["blocking"] is False


def test_a_groups_document_naming_a_missing_key_is_refused_with_group_and_field(
    moto_stack: MotoStack, api: Any
) -> None:
    # Given a document whose second group names a KMS alias that does not exist (line 5)
    document = (
        "groups:\n  - name: Vision\n    sources: [{type: s3, bucket: ingest, prefix: vision/}]\n"
        "  - name: Audio\n    kms_key_id: alias/modelshield-audio\n"
    )
    # When a Security Engineer PUTs it
    status, body = api("PUT", "/groups", body={"yaml": document})
    # Then it is a 400 naming the line, the group and the field, and what to do
    assert status == 400 and body["error"] == "GroupsRefused"
    assert body["problems"] == [
        {
            "level": "error",
            "line": 5,
            "group": "Audio",
            "field": "groups[1].kms_key_id",
            "message": "KMS key 'alias/modelshield-audio' does not exist in this account and region: "
            "create it (or its alias), or remove kms_key_id to use the stack's default key",
        }
    ]
    assert "groups document:5: groups[1].kms_key_id (group 'Audio')" in body["message"]
    # And nothing was stored, not even the valid group
    assert api("GET", "/groups/Vision")[0] == 404


def test_a_groups_document_taking_another_groups_source_is_refused(moto_stack: MotoStack, api: Any) -> None:
    # Given a stored group owning vision/
    owner = "groups:\n  - name: Vision\n    sources: [{type: s3, bucket: ingest, prefix: vision/}]\n"
    assert api("PUT", "/groups", body={"yaml": owner})[0] == 200
    # When another document gives vision/ to a new group
    taker = "groups:\n  - name: Imaging\n    sources:\n      - {type: s3, bucket: ingest, prefix: vision/}\n"
    status, body = api("PUT", "/groups", body={"yaml": taker})
    # Then the same check as `groups apply` refuses it at the source's line
    assert status == 400
    (problem,) = body["problems"]
    assert (problem["line"], problem["group"], problem["field"]) == (4, "Imaging", "groups[0].sources[0]")
    assert "already a source of the stored group 'Vision'" in problem["message"]
    assert api("GET", "/groups/Imaging")[0] == 404


def test_a_dry_run_over_the_api_reports_changes_and_affected_artifacts_without_storing(
    moto_stack: MotoStack, api: Any
) -> None:
    # Given an artifact scanned in the Partner-S3-Audit group
    moto_stack.put("partner/acme/model.pt", benign_checkpoint())
    moto_stack.deliver_queued()
    before = api("GET", "/groups/Partner-S3-Audit")[1]
    # When a dry run tightens that group's rules, using the stack's own key
    document = (
        "groups:\n  - name: Partner-S3-Audit\n"
        f"    kms_key_id: {moto_stack.env['KMS_KEY_ID']}\n"
        "    rules:\n      MS-FORMAT-SAFE: {blocking: true}\n"
    )
    status, body = api("PUT", "/groups", body={"yaml": document, "dry_run": True})
    # Then the change and the affected artifact are reported
    assert status == 200 and body["dry_run"] is True and body["applied"] == []
    # (the stack runs on its built-in groups until some are stored: the group would be created)
    assert body["changes"][0]["name"] == "Partner-S3-Audit" and body["changes"][0]["change"] == "created"
    assert body["affected"]["count"] == 1
    (affected,) = body["affected"]["artifacts"]
    assert affected["artifact"] == f"{moto_stack.ingest}/partner/acme/model.pt"
    # (stored over the built-in groups, a document replaces them all: this one names no sources, so the
    # artifact would fall to `default`; the dry run is what shows that before it happens)
    assert affected["changes"] == ["group"]
    assert (affected["from_group"], affected["to_group"]) == ("Partner-S3-Audit", "default")
    # And nothing was stored
    assert api("GET", "/groups/Partner-S3-Audit")[1] == before
