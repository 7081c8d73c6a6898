"""The compliance dashboard in headless Chromium, on the local stack, after a scripted session.

Uploads allowed and blocked, an approved and a denied decryption by real STS identities (as in
test_access_on_local_stack), then the page is read the way a person reads it: tiles, tables, chart,
filters, keyboard, and the browser's console (where CSP violations and missing files show up).
Chromium comes from Debian's package (`make test` installs it); without it this test fails, it never skips.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from modelshield.cli import main as cli
from modelshield.cli.commands_stack import wait_for_scan
from modelshield.local.samples import benign_checkpoint, malicious_pickle
from modelshield.local.stack import LocalStack
from modelshield.store.scans import ScanStore

from tests.dashboard_truth import assert_matches_tables, expected_from_tables
from tests.e2e.test_access_on_local_stack import become

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CONSUMER = "arn:aws:sts::123456789012:assumed-role/InferenceService/svc-1"
REPO = "team-model-repo"
ENGINEER = "arn:aws:sts::123456789012:assumed-role/ModelShieldSecurityEngineer/alice"


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    saved = dict(os.environ)
    monkeypatch.setenv("MODELSHIELD_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DASHBOARD_REFRESH_SECONDS", "2")
    with LocalStack(quiet=True) as running:
        yield running
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM) or Path(CHROMIUM).is_file(), (
        f"{CHROMIUM} not found: install Debian's chromium (`apt-get install -y chromium`; `make test` does)"
    )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def settled(url: str, want: dict[str, int], timeout: float = 60) -> dict[str, Any]:
    """metrics.json once the stream poller has folded everything in (the counters are eventually
    consistent with the tables: Lambda's stream mapping runs within a second or so)."""
    deadline = time.monotonic() + timeout
    while True:
        document = get_json(f"{url}/metrics.json")
        seen = {
            "encrypted": document["encrypted"]["objects"],
            "quarantined": document["quarantined"]["objects"],
            "denied": document["decrypt_attempts"]["denied"],
            "allowed": document["decrypt_attempts"]["allowed"],
        }
        if all(seen[k] == v for k, v in want.items()) and document["audit_chain"]["pending"] == 0:
            return document
        assert time.monotonic() < deadline, f"counters did not settle: {seen} != {want}"
        time.sleep(0.3)


def run_session(stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    ingest = stack.outputs["ingest_bucket"]
    s3 = stack.client("s3")
    scans = ScanStore(stack.env["SCANS_TABLE"], boto3.resource("dynamodb", endpoint_url=stack.endpoint))
    for key, body in (
        ("models/served.pt", benign_checkpoint("served")),
        ("models/evil.pkl", malicious_pickle()),
    ):
        version = s3.put_object(Bucket=ingest, Key=key, Body=body)["VersionId"]
        wait_for_scan(scans, f"{ingest}/{key}", version, 120)
    artifact = f"{ingest}/models/served.pt"
    capsys.readouterr()

    def request(reason: str) -> str:
        become(stack, "InferenceService", "svc-1")
        capsys.readouterr()
        args = ["access", "request", artifact, "--reason", reason, "--hours", "1", "--format", "json"]
        assert cli(args) == 0
        return json.loads(capsys.readouterr().out)["requests"][0]["request_id"]

    approved = request("serve v2")
    become(stack, "ModelShieldSecurityEngineer", "alice")
    assert cli(["access", "approve", approved, "--reason", "SEC-42"]) == 0
    become(stack, "InferenceService", "svc-1")
    assert cli(["access", "decrypt", approved, "-o", str(tmp_path / "served.pt")]) == 0
    denied = request("once more")
    become(stack, "ModelShieldSecurityEngineer", "alice")
    assert cli(["access", "deny", denied, "--reason", "not needed"]) == 0
    become(stack, "InferenceService", "svc-1")
    assert cli(["access", "decrypt", denied, "-o", str(tmp_path / "refused.pt")]) == 2
    # and an encrypt job over an existing repository: one model encrypted in place, one quarantined
    s3.create_bucket(Bucket=REPO)
    s3.put_bucket_versioning(Bucket=REPO, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=REPO, Key="models/kept.pt", Body=benign_checkpoint("kept"))
    s3.put_object(Bucket=REPO, Key="models/bad.pkl", Body=malicious_pickle("id"))
    become(stack, "ModelShieldSecurityEngineer", "alice")
    capsys.readouterr()
    args = ["jobs", "create", "--source", f"s3://{REPO}/models/", "--operation", "encrypt", "--wait"]
    assert cli([*args, "--format", "json"]) == 1  # a quarantined item is a failed one
    capsys.readouterr()
    return artifact


def tables(stack: LocalStack) -> Any:
    resource = boto3.resource("dynamodb", endpoint_url=stack.endpoint)
    return lambda env_name: resource.Table(stack.env[env_name])


def cells(page: Any, table_id: str) -> list[list[str]]:
    return page.eval_on_selector_all(
        f"#{table_id} tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent.trim()))"
    )


def test_the_dashboard_shows_the_session_as_the_tables_record_it(
    stack: LocalStack, browser: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a session on the local stack: allowed and blocked uploads, one approved and one denied
    # decryption, and an encrypt job over a repository (one model encrypted in place, one quarantined)
    url = stack.outputs["dashboard_url"]
    artifact = run_session(stack, tmp_path, capsys)
    document = settled(url, {"encrypted": 2, "quarantined": 2, "denied": 1, "allowed": 1})

    # Then metrics.json equals what full scans of the tables say
    assert_matches_tables(document, expected_from_tables(tables(stack), datetime.now(UTC)))

    # When an engineer opens the page at 1280 px
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None,
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
    page.goto(url)
    page.wait_for_selector("body[data-refreshes]", state="attached")

    # Then every tile shows the number metrics.json has, as a number and in words
    tiles = page.eval_on_selector_all(
        "[data-metric]",
        "els => els.map(e => [e.dataset.metric, Number(e.dataset.value), e.textContent.trim()])",
    )
    assert len(tiles) >= 10
    for path, value, text in tiles:
        expected: Any = document
        for part in path.split("."):
            expected = expected[part]
        assert value == expected, path
        if path == "audit_chain.problems":
            assert text == "intact"
        elif not path.endswith("bytes"):
            assert text.replace(",", "") == str(expected), path

    # And the verdicts table equals metrics.json, per group
    verdict_rows = {row[0]: row[1:] for row in cells(page, "verdicts-table")}
    for group, counts in document["verdicts_by_group"].items():
        assert verdict_rows[group] == [
            str(counts[v]) for v in ("ALLOWED", "ALLOWED_WITH_WARNINGS", "BLOCKED", "ERROR")
        ]

    # And the attempts table shows the DENIED decryption with its principal, in words
    attempts = cells(page, "attempts-table")
    denied = [row for row in attempts if row[1].startswith("DENIED") and "decrypt denied" in row[1]]
    assert denied and denied[0][2] == CONSUMER and denied[0][3] == artifact
    approved = [row for row in attempts if "decrypt allowed" in row[1]]
    assert approved and approved[0][4] == ENGINEER  # the approver, from the access request

    # And the quarantine lists both blocked pickles, each with a link to its verdict JSON
    quarantine = cells(page, "quarantine-table")
    assert sorted(row[0].rsplit("/", 1)[-1] for row in quarantine) == ["bad.pkl", "evil.pkl"]
    assert all("MS-CODE-EXEC" in row[4] for row in quarantine)
    verdict_href = page.get_attribute("#quarantine-table a", "href")
    assert get_json(url + verdict_href)["verdict"] == "BLOCKED"
    # And the jobs table shows the encrypt job as metrics.json has it, linking to its error report
    (job,) = document["jobs"]
    assert cells(page, "jobs-table") == [
        [
            job["job_id"],
            "encrypt",
            f"s3://{REPO}/models/",
            "COMPLETED_WITH_FAILURES",
            "2/2 2/2",
            "1",
            "errors",
        ]
    ]
    report = get_json(url + str(page.get_attribute("#jobs-table a", "href")))
    assert [(e["key"], e["code"]) for e in report["errors"]] == [("models/bad.pkl", "BLOCKED")]

    # And the capacity chart has drawn
    chart = page.evaluate(
        "() => { const c = document.querySelector('#capacity-chart canvas');"
        " return [!!window.modelshieldChart, c ? c.width : 0, c ? c.height : 0]; }"
    )
    assert chart[0] is True and chart[1] > 0 and chart[2] > 0

    # And nothing scrolls sideways at 1280 px
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 1280

    # When another blocked model arrives, Then the page updates itself without a reload
    page.evaluate("() => { window.__sameDocument = true; }")
    s3 = stack.client("s3")
    s3.put_object(Bucket=stack.outputs["ingest_bucket"], Key="models/evil2.pkl", Body=malicious_pickle("id"))
    page.wait_for_selector('[data-metric="quarantined.objects"][data-value="3"]', timeout=60_000)
    assert page.evaluate("() => window.__sameDocument") is True

    # When the attempts are filtered by principal, Then only that principal's attempts remain
    page.fill("input[name=principal]", ENGINEER)
    page.click("#attempts-filter button[type=submit]")
    page.wait_for_selector("body[data-filtered*='principal']", state="attached")
    rows = cells(page, "attempts-table")
    assert rows and {r[2] for r in rows} == {ENGINEER}

    # And by outcome (chosen with the keyboard), only refusals remain
    page.fill("input[name=principal]", "")
    page.focus("select[name=outcome]")
    page.keyboard.press("ArrowDown")  # any -> ALLOWED
    page.keyboard.press("ArrowDown")  # ALLOWED -> DENIED
    assert page.input_value("select[name=outcome]") == "DENIED"
    page.keyboard.press("Tab")  # to the principal field; Enter there submits the form
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-filtered='outcome=DENIED']", state="attached")
    rows = cells(page, "attempts-table")
    assert rows and all(r[1].startswith("DENIED") for r in rows)
    assert "outcome=DENIED" in page.url

    # And an artifact nobody asked for shows an empty, labelled table
    page.fill("input[name=artifact]", "nobody/asked-for.pt")
    page.click("#attempts-filter button[type=submit]")
    page.wait_for_selector("body[data-filtered*='artifact']", state="attached")
    assert cells(page, "attempts-table") == [["no attempts match"]]

    # And the first Tab reaches the skip link, which leads to the attempts
    page.goto(url)
    page.wait_for_selector("body[data-refreshes]", state="attached")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.className") == "skip"

    # And the browser reported no error, CSP violation or missing file along the way
    assert problems == []
    page.evaluate("() => document.activeElement.blur()")
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    if os.environ.get("DASHBOARD_SCREENSHOT"):
        page.screenshot(path=os.environ["DASHBOARD_SCREENSHOT"], full_page=True)
