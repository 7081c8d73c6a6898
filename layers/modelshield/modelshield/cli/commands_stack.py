"""Commands that talk to a stack (local or deployed): local up|down|env|status, upload, verdict, demo."""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from modelshield import config, wiring
from modelshield.admin import request_rescan
from modelshield.aws import NO_STACK_HINT
from modelshield.cli.output import add_format_flag, print_json, print_table
from modelshield.cli.report import (
    add_output_flag,
    finding_line,
    output_to,
    record_json,
    rule_line,
    summary,
    summary_line,
)
from modelshield.crypto.streams import Expectation
from modelshield.errors import ArtifactNotFound, ConfigError, StackNotRunning, UsageError
from modelshield.local import stack as local
from modelshield.models import ScanRecord
from modelshield.progress import Progress, progress_wanted
from modelshield.walk import walk_files


def register(sub: Any) -> None:
    local_parser = sub.add_parser("local", help="run the stack locally on moto server")
    local_sub = local_parser.add_subparsers(dest="local_command", metavar="ACTION")
    local_sub.required = True
    up = local_sub.add_parser("up", help="start the local stack in the background and print its env")
    up.add_argument("--port", type=int, default=None, help="port for moto server (default: a free one)")
    up.add_argument("--dashboard-port", type=int, default=None, help="port for the dashboard (default: free)")
    up.set_defaults(handler=cmd_local_up)
    local_sub.add_parser("down", help="stop the local stack").set_defaults(handler=cmd_local_down)
    local_sub.add_parser("env", help="print `export` lines for the running stack").set_defaults(
        handler=cmd_local_env
    )
    assume = local_sub.add_parser(
        "assume",
        help="print exports that act as another IAM role on the local stack (e.g. the Security Engineer)",
        description="Assume ROLE through the local stack's STS and print `export` lines for its temporary "
        "credentials. ModelShield takes identity from `sts get-caller-identity`, so after `eval` every "
        "command acts as that role. `security-engineer` is the role the template's "
        "SecurityEngineerRolePattern names (ModelShieldSecurityEngineer); any other name is a role of "
        "that name (e.g. InferenceService for a model consumer). Local only: moto checks no trust policy. "
        '`eval "$(modelshield local env)"` goes back to the stack\'s own identity.',
        epilog="examples:\n"
        '  eval "$(modelshield local assume security-engineer --session alice)"\n'
        '  eval "$(modelshield local assume InferenceService --session svc-1)"',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    assume.add_argument("role", metavar="ROLE", help="security-engineer, or any IAM role name")
    assume.add_argument(
        "--session", default="local", help="role session name, shown in the audit log (default: local)"
    )
    assume.set_defaults(handler=cmd_local_assume)
    events = local_sub.add_parser(
        "events",
        help="the verdict events the local stack's EventBridge bus received (what would notify people)",
        description="Every verdict is published as an EventBridge event (detail-type `ModelShield "
        "Verdict`); on AWS the BLOCKED and ERROR ones go to the notification topic. The local stack "
        "records all of them; this prints them, oldest first.",
        epilog="examples:\n  modelshield local events\n"
        "  modelshield local events --verdict BLOCKED --format json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    events.add_argument(
        "--verdict", type=str.upper, help="only events with this verdict (ALLOWED, BLOCKED, ERROR, ...)"
    )
    add_format_flag(events)
    events.set_defaults(handler=cmd_local_events)
    status = local_sub.add_parser(
        "status", help="is the local stack running, and where (exit 0: running, 1: not running)"
    )
    add_format_flag(status)
    status.set_defaults(handler=cmd_local_status)

    upload = sub.add_parser(
        "upload",
        help="upload a model file or directory to the ingest bucket (and wait for the verdict)",
        description="Upload PATH (a file, or every file under a directory) to the stack's ingest bucket; "
        "the scanner picks it up from there. Files over 64 MiB go up as multipart uploads (S3 refuses "
        "single PUTs over 5 GB). With --wait, print each verdict and a summary; exit 0 when everything "
        "was released, 1 when something was blocked or errored, 2 on usage or I/O errors. A progress bar "
        "(bytes, rate, phase) is drawn on stderr when it is a terminal, unless --quiet.",
        epilog="examples:\n"
        "  modelshield upload model.pt --key models/model.pt --wait\n"
        "  modelshield upload ./checkpoints --key models/run-7/ --wait --format json -o verdicts.json\n"
        "  modelshield upload ~/.cache/huggingface/hub/models--org--name --key huggingface/org/name "
        "--follow-symlinks",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    upload.add_argument("path", type=Path, metavar="PATH", help="a model file, or a directory of them")
    upload.add_argument(
        "--key",
        required=True,
        help="object key for a file; for a directory, the prefix its relative paths go under",
    )
    upload.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="object user metadata, e.g. license=mit (repeatable)",
    )
    upload.add_argument(
        "--wait", action="store_true", help="wait for every verdict, print them and a summary"
    )
    upload.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="with --wait: give up on a verdict after this many seconds (default: 120)",
    )
    upload.add_argument(
        "--follow-symlinks",
        action="store_true",
        help="in a directory, follow symlinks that stay inside it (Hugging Face caches); links leaving it "
        "are refused and named (default: links are skipped and named)",
    )
    upload.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_format_flag(upload)
    add_output_flag(upload)
    upload.set_defaults(handler=cmd_upload)

    verdict = sub.add_parser(
        "verdict",
        help="the latest scan of an uploaded artifact",
        description="Print the latest scan record of an artifact: verdict, every rule, findings, encryption "
        "state. JSON is the record as stored plus `path` (schemas/scan-result.schema.json). Exit 0 when "
        "the verdict releases the artifact, 1 when it does not, 2 when there is no record.",
        epilog="examples:\n  modelshield verdict models/model.pt\n"
        "  modelshield verdict s3://BUCKET/models/model.pt --format json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verdict.add_argument("key", help="object key in the ingest bucket, or s3://bucket/key")
    verdict.add_argument("--version", default=None, help="a specific object version (default: the latest)")
    add_format_flag(verdict)
    add_output_flag(verdict)
    verdict.set_defaults(handler=cmd_verdict)

    rescan = sub.add_parser("rescan", help="re-evaluate a group's artifacts after its rules changed")
    scope = rescan.add_mutually_exclusive_group(required=True)
    scope.add_argument("--group", help="security group whose artifacts to rescan")
    scope.add_argument("--all", action="store_true", help="rescan every artifact")
    rescan.add_argument("--wait", action="store_true", help="wait for the new verdicts and print them")
    rescan.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="with --wait: give up on an artifact's rescan after this many seconds (default: 300)",
    )
    rescan.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_format_flag(rescan)
    add_output_flag(rescan)
    rescan.set_defaults(handler=cmd_rescan)

    demo = sub.add_parser(
        "demo", help="start a local stack, upload a benign and a malicious model, show it all"
    )
    demo.set_defaults(handler=cmd_demo)


# -- local stack ----------------------------------------------------------------------------------------


def cmd_local_up(args: Any) -> int:
    state = local.read_state()
    if state is None:
        local.state_dir().mkdir(parents=True, exist_ok=True)
        log = (local.state_dir() / "local.log").open("ab")
        command = [sys.executable, "-m", "modelshield.local.daemon"]
        if args.port:
            command += ["--port", str(args.port)]
        if args.dashboard_port:
            command += ["--dashboard-port", str(args.dashboard_port)]
        process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)  # noqa: S603
        deadline = time.monotonic() + 60
        while (state := local.read_state()) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise StackNotRunning(
                    f"the local stack did not start (exit {process.poll()}); "
                    f"see {local.state_dir() / 'local.log'}"
                )
            time.sleep(0.2)
        restored = f"; state restored from {local.state_dir()}" if state.get("restored") else ""
        print(
            f"# local stack started at {state['endpoint']} (pid {state['pid']}{restored}); "
            "eval these lines to use it:"
        )
    else:
        print(f"# local stack already running at {state['endpoint']} (pid {state['pid']})")
    if state["outputs"].get("dashboard_url"):
        print(f"# dashboard: {state['outputs']['dashboard_url']}")
    print("\n".join(local.export_lines(state["env"])))
    return 0


def cmd_local_down(args: Any) -> int:
    state = local.read_state()
    if state is None:
        print("local stack is not running")
        return 0
    pid = int(state["pid"])
    os.kill(pid, 15)
    if not _wait_gone(pid, 30):
        os.kill(pid, 9)  # the daemon ignored SIGTERM for 30 s: it holds nothing that must be flushed
        if not _wait_gone(pid, 5):
            raise StackNotRunning(f"the local stack (pid {pid}) did not stop; kill it by hand")
    local.state_file().unlink(missing_ok=True)
    from modelshield.local.persistence import SNAPSHOT_NAME

    snapshot = local.state_dir() / SNAPSHOT_NAME
    kept = (
        f"its buckets, tables and keys are saved in {snapshot} and come back with the next "
        f"`modelshield local up` (delete that file to start empty)"
        if snapshot.exists()
        else "it left no snapshot, so the next `modelshield local up` starts empty"
    )
    print(f"local stack at {state['endpoint']} stopped (pid {pid} has exited); {kept}")
    return 0


def _wait_gone(pid: int, seconds: float) -> bool:
    """Wait until process `pid` has exited (reaped or not ours); True if it did within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)  # our own child (tests start it so): reap it
            if finished:
                return True
        except ChildProcessError:
            pass  # started by another `modelshield local up`: not our child, so poll for it instead
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        time.sleep(0.1)
    return False


def cmd_local_assume(args: Any) -> int:
    arn, creds = local.assume_role(local.require_state(), args.role, args.session)
    print(f'# acting as {arn}; `eval "$(modelshield local env)"` to go back')
    print("\n".join(f"export {k}={shlex.quote(v)}" for k, v in creds.items()))
    return 0


def cmd_local_events(args: Any) -> int:
    """Events of the running local stack (or of its last run: the file is reset when a stack starts)."""
    wanted = args.verdict
    events = [e for e in local.read_events() if not wanted or e["detail"].get("verdict") == wanted]
    if args.format == "json":
        print_json({"events": events})
        return 0
    if not events:
        running = "" if local.read_state() else " (and no local stack is running: `modelshield local up`)"
        print(f"no verdict events yet{running}")
        return 0
    print_table(
        ["TIME", "VERDICT", "ARTIFACT", "VERSION", "GROUP", "FAILING RULES"],
        [
            (
                e["time"],
                e["detail"].get("verdict"),
                e["detail"].get("artifact_id"),
                e["detail"].get("version_id"),
                e["detail"].get("group"),
                ", ".join(e["detail"].get("failing_rules", [])) or "-",
            )
            for e in events
        ],
    )
    return 0


def cmd_local_env(args: Any) -> int:
    print("\n".join(local.export_lines(local.require_state()["env"])))
    return 0


def cmd_local_status(args: Any) -> int:
    """Exit 0 when a local stack is running, 1 when not (so scripts can test it)."""
    state = local.read_state()
    if args.format == "json":
        print_json({"running": state is not None, **(state or {})})
    elif state is None:
        print("local stack: not running (start it with `modelshield local up`)")
    else:
        print(f"local stack: running at {state['endpoint']} (pid {state['pid']})")
        for name, value in state["outputs"].items():
            print(f"  {name}: {value}")
    return 0 if state is not None else 1


# -- talking to a stack ---------------------------------------------------------------------------------


def _target() -> dict[str, str]:
    """Bucket and table names of the stack to talk to: env vars (deployed or `eval $(modelshield local
    env)`), else the running local stack."""
    local.use_local_stack_if_running()
    target = config.load(config.StackTarget)
    names = {
        "INGEST_BUCKET": target.ingest_bucket,
        "VAULT_BUCKET": target.vault_bucket,
        "SCANS_TABLE": target.scans_table,
        "ARTIFACTS_TABLE": target.artifacts_table,
    }
    if not names["INGEST_BUCKET"] or not names["SCANS_TABLE"]:
        raise StackNotRunning(
            "no stack to talk to (no local stack runs, INGEST_BUCKET and SCANS_TABLE are not set): "
            + NO_STACK_HINT
        )
    return names


def _parse_pairs(pairs: list[str], flag: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} expects KEY=VALUE, got {pair!r}")
        result[key.strip()] = value
    return result


def _files_to_upload(
    path: Path, key: str, *, follow_symlinks: bool = False
) -> tuple[list[tuple[Path, str]], list[dict[str, str]]]:
    """(file, key) pairs to upload, and the entries skipped with why (links, special files)."""
    if path.is_file():
        return [(path, key)], []
    if path.is_dir():
        prefix = key.rstrip("/")
        files, skipped = [], []
        for entry in walk_files(path, follow_symlinks=follow_symlinks):
            if entry.skip_reason:
                skipped.append({"path": str(path / entry.relative), "reason": entry.skip_reason})
            else:
                files.append((entry.path, f"{prefix}/{entry.relative}" if prefix else entry.relative))
        if not files:
            also = f" ({len(skipped)} skipped)" if skipped else ""
            raise UsageError(f"{path} contains no files to upload{also}")
        return files, skipped
    raise UsageError(f"{path}: no such file or directory")


def cmd_upload(args: Any) -> int:
    target = _target()
    metadata = _parse_pairs(args.metadata, "--metadata")
    from modelshield.store.scans import ScanStore
    from modelshield.transfer import upload_file

    files, skipped = _files_to_upload(args.path, args.key, follow_symlinks=args.follow_symlinks)
    for s in skipped:
        print(f"skipped {s['path']}: {s['reason']}", file=sys.stderr)
    s3 = wiring.s3_client()
    uploaded: list[tuple[str, str | None]] = []
    total = sum(f.stat().st_size for f, _ in files)
    label = files[0][0].name if len(files) == 1 else f"{len(files)} files"
    bucket = target["INGEST_BUCKET"]
    with Progress(total, phase="uploading", label=label, enabled=progress_wanted(args.quiet)) as bar:
        for file, key in files:
            version = upload_file(s3, file, bucket=bucket, key=key, metadata=metadata, progress=bar)
            uploaded.append((key, version))
        if not args.wait:
            bar.close()
            for key, version in uploaded:
                print(f"uploaded s3://{bucket}/{key} (version {version})")
            return 0
        store = ScanStore(target["SCANS_TABLE"], wiring.dynamodb())
        bar.phase("scanning", total=len(uploaded))
        bar.unit = "files"
        records = []
        for key, version in uploaded:
            records.append(wait_for_scan(store, f"{target['INGEST_BUCKET']}/{key}", version, args.timeout))
            bar.advance(1)
    results = [record_json(r) for r in records]
    counts = summary(results, skipped)
    with output_to(args.output):
        if args.format == "json":
            print_json({"results": results, "summary": counts})
        else:
            for record in records:
                print_scan_record(record)
                print()
            print(summary_line(counts, "file", "uploaded"))
    if args.output or args.format == "json":
        print(summary_line(counts, "file", "uploaded"), file=sys.stderr)
    return 0 if all(r.verdict.releases for r in records) else 1


def wait_for_scan(store: Any, artifact_id: str, version_id: str | None, timeout: float) -> ScanRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = store.latest(artifact_id, version_id)
        if record is not None:
            return record
        time.sleep(0.25)
    raise ArtifactNotFound(
        f"no verdict for {artifact_id} (version {version_id}) after {timeout:.0f}s: is the scanner running? "
        "check the scan queue's dead-letter queue and the function logs"
    )


def cmd_verdict(args: Any) -> int:
    target = _target()
    from modelshield.store.scans import ScanStore

    if args.key.startswith("s3://"):
        artifact_id = args.key[len("s3://") :]
    else:
        artifact_id = f"{target['INGEST_BUCKET']}/{args.key.lstrip('/')}"
    record = ScanStore(target["SCANS_TABLE"], wiring.dynamodb()).latest(artifact_id, args.version)
    if record is None:
        raise ArtifactNotFound(
            f"no scan recorded for s3://{artifact_id}"
            + (f" version {args.version}" if args.version else "")
            + ": check the key (`aws s3 ls`), or wait a few seconds after uploading"
        )
    with output_to(args.output):
        if args.format == "json":
            print_json(record_json(record))
        else:
            print_scan_record(record)
    return 0 if record.verdict.releases else 1


def print_scan_record(record: ScanRecord) -> None:
    """The same rule and finding lines as `scan`'s table (cli/report.py)."""
    group = f"{record.group or '(no)'} group (v{record.group_version})"
    print(f"Scan of {record.key}:{record.version_id} using {group}")
    print(
        f"  verdict: {record.verdict.value}   encryption: {record.encryption_state.value}"
        f"   format: {record.format.value}"
    )
    print(
        f"  sha256:  {record.sha256 or '-'}   size: {record.size} bytes"
        f"   scanned: {record.scanned_at:%Y-%m-%d %H:%M:%S}Z"
    )
    if record.message:
        print(f"  summary: {record.message}")
    for rule in record.rules:
        print(rule_line(rule))
    if record.findings:
        print("  findings:")
        for finding in record.findings:
            print(finding_line(finding))


def cmd_rescan(args: Any) -> int:
    target = _target()
    from modelshield.store.artifacts import ArtifactStore

    try:
        settings = config.load(config.RescanSettings)
    except ConfigError as exc:
        raise StackNotRunning(
            f"rescan needs RESCAN_QUEUE_URL, GROUPS_TABLE and ARTIFACTS_TABLE: {exc}"
        ) from None
    started = time.time()
    request_id, states = request_rescan(
        groups=wiring.group_store(settings.groups).effective(),
        artifacts=ArtifactStore(settings.artifacts_table, wiring.dynamodb()).all(),
        sqs=wiring.client("sqs"),
        queue_url=settings.rescan_queue_url,
        group=None if args.all else args.group,
        audit=wiring.optional_audit_log(),
        principal=wiring.caller_arn,
    )
    if not states:
        print(f"no artifacts belong to {args.group or 'any group'}: nothing to rescan")
        return 0
    print(
        f"queued {len(states)} rescans (request {request_id})",
        file=sys.stderr if args.format == "json" else sys.stdout,
    )
    if not args.wait:
        return 0
    from modelshield.store.scans import ScanStore

    scans = ScanStore(target["SCANS_TABLE"], wiring.dynamodb())
    records = []
    bar = Progress(len(states), phase="rescanning", unit="artifacts", enabled=progress_wanted(args.quiet))
    with bar:
        for state in states:
            deadline = time.monotonic() + args.timeout
            while True:
                record = scans.latest(state.artifact_id, state.version_id)
                if (
                    record is not None
                    and record.trigger == "rescan"
                    and record.scanned_at.timestamp() >= started - 1
                ):
                    records.append(record)
                    bar.advance(1)
                    break
                if time.monotonic() > deadline:
                    raise ArtifactNotFound(
                        f"rescan of {state.artifact_id} did not finish in {args.timeout:.0f}s"
                    )
                time.sleep(0.25)
    results = [record_json(r) for r in records]
    counts = summary(results)
    with output_to(args.output):
        if args.format == "json":
            print_json({"request_id": request_id, "results": results, "summary": counts})
        else:
            print_table(
                ["artifact", "version", "verdict", "encryption"],
                [[r.key, r.version_id, r.verdict.value, r.encryption_state.value] for r in records],
            )
            print(summary_line(counts, "artifact", "rescanned"))
    return 0 if all(r.verdict.releases for r in records) else 1


# -- demo -----------------------------------------------------------------------------------------------


def cmd_demo(args: Any) -> int:
    from modelshield.crypto.keyring import KmsKeyring
    from modelshield.crypto.s3 import decrypt_s3_to
    from modelshield.local.samples import benign_checkpoint, malicious_pickle
    from modelshield.models import ArtifactRef, encryption_context
    from modelshield.store.artifacts import ArtifactStore
    from modelshield.store.scans import ScanStore

    samples = {
        "models/demo/classifier.pt": benign_checkpoint("classifier"),
        "models/demo/innocent-looking.pkl": malicious_pickle(),
    }
    print("ModelShield demo: starting a local stack on moto server ...")
    with local.LocalStack(quiet=True) as stack:
        s3 = stack.client("s3")
        ingest, vault = stack.outputs["ingest_bucket"], stack.outputs["vault_bucket"]
        versions: dict[str, str] = {}
        for key, body in samples.items():
            versions[key] = s3.put_object(Bucket=ingest, Key=key, Body=body)["VersionId"]
            print(
                f"  uploaded s3://{ingest}/{key} ({len(body)} bytes, "
                f"sha256 {hashlib.sha256(body).hexdigest()[:16]}...)"
            )
        scans = ScanStore(stack.env["SCANS_TABLE"], wiring.dynamodb())
        records = {key: wait_for_scan(scans, f"{ingest}/{key}", versions[key], 120) for key in samples}
        print()
        rows = []
        for key, record in records.items():
            rules = ", ".join(
                f"{r.rule.value}:{r.status.value}"
                for r in record.rules
                if r.status.value in ("FAIL", "ERROR")
            )
            rows.append(
                [
                    key,
                    record.format.value,
                    record.verdict.value,
                    record.encryption_state.value,
                    (record.sha256 or "")[:16] + "...",
                    rules or "all rules passed",
                ]
            )
        print_table(["key", "format", "verdict", "encryption", "sha256", "rule findings"], rows)
        print()
        for record in records.values():
            for finding in record.findings:
                print(
                    f"  {record.key}: [{finding.severity.name}] {finding.rule.value} "
                    f"at {finding.location}: {finding.message}"
                )
        allowed_key = "models/demo/classifier.pt"
        record = records[allowed_key]
        artifacts = ArtifactStore(stack.env["ARTIFACTS_TABLE"], wiring.dynamodb())
        state = artifacts.get(f"{ingest}/{allowed_key}", record.version_id)
        if state is None or not record.verdict.releases:
            print(f"\nunexpected: {allowed_key} was not released ({record.verdict.value})")
            return 1
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "classifier.pt"
            context = encryption_context(
                ArtifactRef(bucket=ingest, key=allowed_key, version_id=record.version_id),
                sha256=record.sha256 or "",
                group=record.group,
            )
            digest = decrypt_s3_to(
                vault,
                state.vault_key or allowed_key,
                state.vault_version_id,
                out,
                s3=s3,
                expect=Expectation(KmsKeyring(stack.client("kms")), context),
            )
        uploaded = hashlib.sha256(samples[allowed_key]).hexdigest()
        print(f"\ndecrypted s3://{vault}/{state.vault_key} (version {state.vault_version_id})")
        print(f"  uploaded  sha256 {uploaded}")
        print(f"  decrypted sha256 {digest}")
        match = digest == uploaded
        print("  MATCH: the vault copy decrypts to exactly the uploaded bytes" if match else "  MISMATCH")
        blocked = records["models/demo/innocent-looking.pkl"]
        listing = s3.list_objects_v2(Bucket=vault).get("Contents", [])
        print(f"\nvault objects: {', '.join(o['Key'] for o in listing)}")
        print(f"the malicious pickle is {blocked.verdict.value} and stored only under quarantine/")
        ok = match and blocked.verdict.value == "BLOCKED" and record.encryption_state.value == "ENCRYPTED"
        from modelshield.cli.commands_jobs import demo_bulk_job

        ok = demo_bulk_job(stack) and ok
    print("\nlocal stack stopped.")
    return 0 if ok else 1
