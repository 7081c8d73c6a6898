"""The local stack: moto in server mode on 127.0.0.1 standing in for AWS, provisioned from template.yaml,
with pollers that play the Lambda SQS event-source mappings and invoke the real handlers in-process.

`LocalStack` is used two ways: in-process by `modelshield demo` and the end-to-end tests (a context
manager), and as a background daemon by `modelshield local up` (`python -m modelshield.local.daemon`),
which writes a state file that `local env`, `local down` and every other command read.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from modelshield import config, wiring
from modelshield.aws import NO_STACK_HINT
from modelshield.errors import StackNotRunning
from modelshield.local.api_server import ApiServer, moto_credentials
from modelshield.local.dashboard_server import DashboardServer
from modelshield.local.interpreter_logs import quiet_interpreter
from modelshield.local.streams import StreamPump
from modelshield.local.template import ACCOUNT_ID, REGION, FunctionSpec, LocalProvisioner, load_template
from modelshield.policy.groups import default_groups
from modelshield.store.groups import GroupStore

STACK_NAME = "modelshield-local"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "modelshield-local", "AWS_SECRET_ACCESS_KEY": "modelshield-local"}


def repo_root() -> Path:
    """The checkout this package runs from (layers/modelshield/modelshield/local/stack.py → 4 up)."""
    return Path(__file__).resolve().parents[4]


def template_path() -> Path:
    explicit = config.load(config.LocalSettings).template
    candidates = (
        [Path(explicit)] if explicit else [repo_root() / "template.yaml", Path.cwd() / "template.yaml"]
    )
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise StackNotRunning(
        "template.yaml not found: run from a ModelShield checkout or set MODELSHIELD_TEMPLATE to its path"
    )


def state_dir() -> Path:
    return Path(config.load(config.LocalSettings).state_dir)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalContext:
    """The Lambda context object handed to handlers (the interface Powertools reads)."""

    function_name: str
    memory_limit_in_mb: int
    timeout_seconds: int

    def __post_init__(self) -> None:
        self.aws_request_id = uuid.uuid4().hex
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"
        self.function_version = "$LATEST"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + self.timeout_seconds

        _invocation.context = self  # made on the thread that invokes with it: that thread's log lines

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


_invocation = threading.local()


class InvocationLogFields(logging.Filter):
    """Each log line names the function whose invocation wrote it.

    Powertools' `inject_lambda_context` appends the context's keys to the one shared logger, which is
    right in Lambda (one invocation per process at a time) and wrong here, where the pollers of several
    functions share a process: a line would carry whichever function's invocation began last. This filter
    sets those keys on each record from the invoking thread's own context.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        context = getattr(_invocation, "context", None)
        if context is not None:
            record.function_name = context.function_name
            record.function_request_id = context.aws_request_id
            record.function_arn = context.invoked_function_arn
            record.function_memory_size = context.memory_limit_in_mb
        return True


def name_functions_in_log_lines() -> None:
    """Install InvocationLogFields on the project's logger (once per process)."""
    from modelshield.observability import logger

    if not any(isinstance(f, InvocationLogFields) for f in logger.filters):
        logger.addFilter(InvocationLogFields())


def load_handler(spec: FunctionSpec) -> Any:
    """Import functions/<name>/app.py by path (each function has its own module, like separate Lambdas)."""
    module_file, _, attr = spec.handler.rpartition(".")
    path = repo_root() / spec.code_uri / f"{module_file}.py"
    name = f"modelshield_function_{spec.logical_id}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise StackNotRunning(f"cannot load handler {path}")
    module: ModuleType = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return getattr(module, attr)


class LocalStack:
    """moto server + resources from template.yaml + SQS pollers invoking the real handlers."""

    def __init__(
        self,
        *,
        port: int | None = None,
        poll_wait_seconds: int = 1,
        quiet: bool = False,
        dashboard_port: int | None = None,
        max_pollers: int = 2,
        persist_to: Path | None = None,
        snapshot_seconds: float = 2.0,
    ) -> None:
        self.quiet = quiet
        self.max_pollers = max_pollers  # per function with a ScalingConfig (the JobWorker): local concurrency
        self.persist_to = persist_to  # a directory: moto's state is snapshotted there and restored from it
        self.snapshot_seconds = snapshot_seconds
        self.restored = False
        self._snapshotter: Any = None
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.poll_wait_seconds = poll_wait_seconds
        self._server: Any = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.env: dict[str, str] = {}
        self.outputs: dict[str, str] = {}
        self.invocations = 0
        self.errors: list[str] = []
        self.dashboard_port = dashboard_port
        self._dashboard: Any = None
        self._api: Any = None
        self.streams: list[StreamPump] = []

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self, *, pollers: bool = True) -> LocalStack:
        from moto.server import ThreadedMotoServer

        from modelshield.local.moto_atomic import make_dynamodb_atomic
        from modelshield.local.moto_memory import (
            install_cheap_queue_counts,
            install_cheap_transaction_backups,
            install_dispatch_cache,
        )

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        quiet_interpreter()  # moto's ASL interpreter logs two expected lines per job (interpreter_logs.py)
        name_functions_in_log_lines()  # several functions' invocations share this process (pollers)

        install_cheap_transaction_backups()  # moto copies whole tables per transaction (moto_memory)
        install_dispatch_cache()  # moto server lists its package directory per request (moto_memory)
        install_cheap_queue_counts()  # moto SQS reads the clock per message per count (moto_memory)
        make_dynamodb_atomic()  # moto's conditional writes race across request threads (moto_atomic)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        # moto keeps its state per process: a fresh stack must not inherit an earlier one's resources.
        reset = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")  # noqa: S310
        urllib.request.urlopen(reset, timeout=10).close()  # noqa: S310 - our own loopback server
        # Bulk jobs run on moto's Step Functions interpreter: executions are opt-in, and the interpreter's
        # own SQS/S3 calls go to localhost:$MOTO_PORT (TOOLING.md).
        enable = urllib.request.Request(  # noqa: S310
            f"{self.endpoint}/moto-api/config",
            data=json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode(),
            method="POST",
        )
        urllib.request.urlopen(enable, timeout=10).close()  # noqa: S310 - our own loopback server
        base_env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            **FAKE_CREDENTIALS,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "ModelShield",
            "MOTO_PORT": str(self.port),
        }
        config.export(base_env)
        config.unset(("AWS_PROFILE", "AWS_SESSION_TOKEN"))
        services = ("s3", "sqs", "dynamodb", "kms", "ssm", "events", "stepfunctions")
        clients = {name: self.client(name) for name in services}
        provisioned = LocalProvisioner(
            load_template(template_path()), stack_name=STACK_NAME, clients=clients
        ).provision()
        self.provisioned = provisioned
        env: dict[str, str] = dict(base_env)
        for spec in provisioned.functions.values():
            env.update(spec.environment)
        env["WORKDIR"] = str(state_dir() / "work")
        env["REPOSITORY_BUCKETS"] = "*"  # locally any bucket can be a repository
        self.env = env
        config.export(env)
        self.outputs = {
            "ingest_bucket": provisioned.names.get("IngestBucket", ""),
            "vault_bucket": provisioned.names.get("VaultBucket", ""),
            "scan_queue_url": provisioned.names.get("ScanQueue", ""),
            "dead_letter_queue_url": provisioned.names.get("ScanDeadLetterQueue", ""),
            "audit_anchor_bucket": provisioned.names.get("AuditAnchorBucket", ""),
            "jobs_table": provisioned.names.get("JobsTable", ""),
            "jobs_state_machine": provisioned.names.get("JobsStateMachine", ""),
            "reports_bucket": provisioned.names.get("ReportsBucket", ""),
        }
        # Rescans go to the RescanFunction's queue (it reads vault copies); uploads to the scan queue.
        queues = {
            "SCAN_QUEUE_URL": self.outputs["scan_queue_url"],
            "RESCAN_QUEUE_URL": provisioned.names.get("RescanQueue") or self.outputs["scan_queue_url"],
            "SCAN_DEAD_LETTER_QUEUE_URL": self.outputs["dead_letter_queue_url"],
        }
        self.env.update(queues)
        config.export(queues)
        if self.persist_to is not None:
            from modelshield.local import persistence

            self.persist_to.mkdir(parents=True, exist_ok=True)
            # names are deterministic: the restored resources are the ones this environment names
            self.restored = persistence.restore(self.persist_to / persistence.SNAPSHOT_NAME)
        self._seed_groups()
        self._drain_test_events()
        if self.quiet:  # the demo prints its own story; handler logs and metrics go nowhere
            config.export({"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"})
        if pollers:
            for spec in provisioned.functions.values():
                for queue_logical, batch in spec.sqs_sources:
                    for _ in range(min(spec.max_concurrency or 1, self.max_pollers)):
                        self._start_poller(spec, provisioned.names[queue_logical], batch)
                if spec.stream_sources:
                    self._start_stream_poller(spec)
        if "DashboardFunction" in provisioned.functions:
            self._start_dashboard(provisioned.functions["DashboardFunction"])
        if "ApiFunction" in provisioned.functions:
            self._start_api(provisioned.functions["ApiFunction"])
        if pollers and "VerdictEventBus" in provisioned.names:
            self._record_events(provisioned.names["VerdictEventBus"])
        if self.persist_to is not None:
            self._start_snapshots()
        self._start_housekeeping()
        return self

    def _start_snapshots(self) -> None:
        from modelshield.local import persistence

        counter = persistence.ChangeCounter(self._server._server.app)
        self._server._server.app = counter  # werkzeug serves `server.app` per request
        seen = {"changes": -1}

        def dirty() -> bool:
            changed = counter.changes != seen["changes"]
            seen["changes"] = counter.changes
            return changed

        assert self.persist_to is not None
        self._snapshotter = persistence.Snapshotter(
            self.persist_to / persistence.SNAPSHOT_NAME, interval=self.snapshot_seconds, dirty=dirty
        ).start()

    def stop(self) -> None:
        self._stop.set()
        if self._dashboard is not None:
            self._dashboard.stop()
            self._dashboard = None
        if self._api is not None:
            self._api.stop()
            self._api = None
        for thread in self._threads:
            thread.join(timeout=10)
        if self._snapshotter is not None:  # the last snapshot, after the pollers' last writes
            self._snapshotter.stop()
            self._snapshotter = None
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, service: str) -> Any:
        return wiring.client(service, **self._endpoint())

    def _endpoint(self) -> dict[str, Any]:
        return {
            "endpoint_url": self.endpoint,
            "region_name": REGION,
            "aws_access_key_id": FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        }

    # -- setup helpers -------------------------------------------------------------------------------
    def _seed_groups(self) -> None:
        """Seed the default security groups, as a deploy does (an empty table means the defaults anyway)."""
        table = self.env.get("GROUPS_TABLE")
        if table:
            GroupStore(table, wiring.dynamodb(**self._endpoint())).seed_defaults(
                default_groups(ingest_bucket=self.outputs["ingest_bucket"])
            )

    def _drain_test_events(self) -> None:
        """S3 sends `s3:TestEvent` when notifications are configured; the handler ignores it, but draining it
        here keeps the first poll quiet."""
        sqs = self.client("sqs")
        url = self.outputs["scan_queue_url"]
        if url:
            for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
                if json.loads(message["Body"]).get("Event") == "s3:TestEvent":
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                else:
                    sqs.change_message_visibility(
                        QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                    )

    # -- verdict events: what the notification topic would receive ------------------------------------
    def _record_events(self, bus: str) -> None:
        """A rule on the verdict bus to a local queue, drained into events.jsonl for `local events`.

        moto delivers EventBridge events to SQS targets but runs no SNS subscriptions or alarms, so the
        local stack shows every verdict event itself (all of them, not only the BLOCKED/ERROR ones the
        template's rule forwards).
        """
        sqs, events = self.client("sqs"), self.client("events")
        url = sqs.create_queue(QueueName=f"{STACK_NAME}-verdict-events")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(
            Name=f"{STACK_NAME}-all-verdicts",
            EventBusName=bus,
            EventPattern=json.dumps({"source": ["modelshield"]}),
        )
        events.put_targets(
            Rule=f"{STACK_NAME}-all-verdicts", EventBusName=bus, Targets=[{"Id": "local", "Arn": arn}]
        )
        events_file().parent.mkdir(parents=True, exist_ok=True)
        events_file().write_text("")  # this stack's events only
        thread = threading.Thread(
            target=self._drain_events, args=(sqs, url), name="verdict-events", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def _drain_events(self, sqs: Any, url: str) -> None:
        while not self._stop.is_set():
            try:
                messages = sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=self.poll_wait_seconds
                ).get("Messages", [])
            except Exception as exc:  # server stopping
                if self._stop.is_set():
                    return
                self.errors.append(f"verdict events: {exc}")
                time.sleep(0.5)
                continue
            with events_file().open("a", encoding="utf-8") as out:
                for message in messages:
                    out.write(json.dumps(json.loads(message["Body"]), sort_keys=True) + "\n")
            for message in messages:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    # -- the dashboard, and the DynamoDB-stream event-source mappings (filters included) ---------------
    def _start_dashboard(self, spec: FunctionSpec) -> None:
        """Serve DashboardFunction's handler on 127.0.0.1, as the load balancer would invoke it."""
        handler = load_handler(spec)
        self._dashboard = DashboardServer(
            handler,
            lambda: LocalContext(spec.logical_id, spec.memory, spec.timeout),
            port=self.dashboard_port or 0,
        ).start()
        self.outputs["dashboard_url"] = self._dashboard.url
        self.env["DASHBOARD_URL"] = self._dashboard.url
        config.export({"DASHBOARD_URL": self._dashboard.url})

    def _start_api(self, spec: FunctionSpec) -> None:
        """Serve ApiFunction's handler on 127.0.0.1 behind a SigV4 check, as API Gateway's IAM auth would
        (`local/api_server.py`). `MODELSHIELD_API_URL` is what the CLI sends approvals to."""
        from modelshield.api import use_services

        use_services(None)  # an earlier in-process stack's services point at its own (stopped) endpoint
        handler = load_handler(spec)
        self._api = ApiServer(
            handler,
            lambda: LocalContext(spec.logical_id, spec.memory, spec.timeout),
            moto_credentials(
                FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"], FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
            ),
        ).start()
        self.outputs["api_url"] = self._api.url
        self.env["MODELSHIELD_API_URL"] = self._api.url
        config.export({"MODELSHIELD_API_URL": self._api.url})

    def _start_stream_poller(self, spec: FunctionSpec) -> None:
        handler = load_handler(spec)

        def deliver(event: dict[str, Any]) -> dict[str, Any]:
            self.invocations += 1
            return handler(event, LocalContext(spec.logical_id, spec.memory, spec.timeout)) or {}

        arns = [self.provisioned.stream_arns[table] for table, _ in spec.stream_sources]
        batch = min(size for _, size in spec.stream_sources)
        pump = StreamPump(
            self.client("dynamodbstreams"),
            arns,
            deliver,
            batch_size=batch,
            keep=lambda record: _matches(spec.stream_filters, record),
        )
        self.streams.append(pump)
        thread = threading.Thread(
            target=self._pump, args=(spec, pump), name=f"streams-{spec.logical_id}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def _start_housekeeping(self, every: float = 10.0) -> None:
        """moto keeps every model object it ever made; drop those references on a timer (moto_memory)."""
        from modelshield.local.moto_memory import release_tracked_instances

        def run() -> None:
            while not self._stop.wait(every):
                release_tracked_instances()

        thread = threading.Thread(target=run, name="moto-housekeeping", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _pump(self, spec: FunctionSpec, pump: StreamPump) -> None:
        while not self._stop.is_set():
            try:
                delivered = pump.pump()
            except Exception as exc:  # server stopping, or a handler error Lambda would retry
                if self._stop.is_set():
                    return
                self.errors.append(f"{spec.logical_id} streams: {type(exc).__name__}: {exc}")
                delivered = 0
            if not delivered:
                self._stop.wait(0.5)

    # -- the event-source mapping ----------------------------------------------------------------------
    def _start_poller(self, spec: FunctionSpec, queue_url: str, batch_size: int) -> None:
        handler = load_handler(spec)
        thread = threading.Thread(
            target=self._poll,
            args=(spec, handler, queue_url, batch_size),
            name=f"poller-{spec.logical_id}",
            daemon=True,
        )
        thread.start()
        self._threads.append(thread)

    def _poll(self, spec: FunctionSpec, handler: Any, queue_url: str, batch_size: int) -> None:
        sqs = self.client("sqs")
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        while not self._stop.is_set():
            try:
                messages = sqs.receive_message(
                    QueueUrl=queue_url,
                    MaxNumberOfMessages=min(batch_size, 10),
                    WaitTimeSeconds=self.poll_wait_seconds,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            except Exception as exc:  # server stopping
                if self._stop.is_set():
                    return
                self.errors.append(f"receive: {exc}")
                time.sleep(0.5)
                continue
            if messages:
                self._invoke(spec, handler, sqs, queue_url, queue_arn, messages)

    def _invoke(
        self,
        spec: FunctionSpec,
        handler: Any,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        messages: list[dict[str, Any]],
    ) -> None:
        event = {"Records": [sqs_record(m, queue_arn) for m in messages]}
        context = LocalContext(spec.logical_id, spec.memory, spec.timeout)
        try:
            response = handler(event, context) or {}
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        except Exception as exc:  # the whole batch failed, as Lambda would report it
            self.errors.append(f"{spec.logical_id}: {type(exc).__name__}: {exc}")
            failed = {m["MessageId"] for m in messages}
        self.invocations += 1
        for message in messages:
            if message["MessageId"] in failed:
                # Back to the queue soon (locally; in AWS the visibility timeout applies); the queue's
                # redrive policy moves it to the dead-letter queue after maxReceiveCount receives.
                sqs.change_message_visibility(
                    QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=2
                )
            else:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def _matches(patterns: list[dict[str, Any]], record: dict[str, Any]) -> bool:
    """Lambda event filtering, the subset the template uses: nested keys, each a list of allowed values."""

    def match(pattern: Any, value: Any) -> bool:
        if isinstance(pattern, dict):
            return isinstance(value, dict) and all(match(p, value.get(k)) for k, p in pattern.items())
        return value in pattern

    return not patterns or any(match(p, record) for p in patterns)


def sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    """The record shape Lambda's SQS event source delivers."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


# -- state file shared by `local up/down/env` and every command that talks to the stack ----------------


def events_file() -> Path:
    """Verdict events the running local stack received on its bus, one JSON object a line."""
    return state_dir() / "events.jsonl"


def read_events() -> list[dict[str, Any]]:
    path = events_file()
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def state_file() -> Path:
    return state_dir() / "local.json"


def process_alive(pid: int) -> bool:
    """Whether `pid` is a running process. `os.kill(pid, 0)` alone is not enough: a daemon killed with
    `kill -9` whose parent never reaped it is a zombie, which still "exists" for signals."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if stat.is_file():
        try:
            state = stat.read_text().rpartition(")")[2].split()[0]  # the field after "(comm)"
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")  # zombie / dead
    try:  # no /proc (macOS): a child of ours that exited is reaped here
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def endpoint_answers(endpoint: str, timeout: float = 1.0) -> bool:
    """A health ping: does something accept connections at the stack's endpoint?"""
    parsed = urllib.parse.urlsplit(endpoint)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 80), timeout=timeout):
            return True
    except OSError:
        return False


def read_state() -> dict[str, Any] | None:
    """The running stack's state file, or None when there is none or its daemon is gone (exited, a
    zombie, or its endpoint no longer answers)."""
    path = state_file()
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not process_alive(int(state.get("pid", 0))) or not endpoint_answers(str(state.get("endpoint", ""))):
        return None  # stale: the daemon is gone
    return state


def require_state() -> dict[str, Any]:
    state = read_state()
    if state is None:
        raise StackNotRunning(f"no stack: the local stack is not running; {NO_STACK_HINT}")
    return state


def export_lines(env: dict[str, str]) -> list[str]:
    """Shell `export` lines, each value quoted for `eval` (paths with spaces, the role pattern's `*`).

    The stack's own credentials carry no session token: one left over from `local assume` is unset.
    """
    lines = [f"export {k}={shlex.quote(str(v))}" for k, v in sorted(env.items())]
    if "AWS_ACCESS_KEY_ID" in env and "AWS_SESSION_TOKEN" not in env:
        lines.append("unset AWS_SESSION_TOKEN")
    return lines


CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# `modelshield local assume security-engineer`: the role the template's SecurityEngineerRolePattern names.
ROLE_ALIASES = {"security-engineer": "ModelShieldSecurityEngineer"}


def use_local_stack_if_running() -> bool:
    """Point this process at the running local stack unless the caller already chose a target.

    Credentials the caller set (e.g. from `local assume`) are kept: who is acting is the caller's choice.
    """
    settings = config.load(config.LocalSettings)
    if settings.ingest_bucket or settings.target == "aws":
        return False
    state = read_state()
    if state is None:
        return False
    keep = settings.access_key_id is not None
    config.export({k: v for k, v in state["env"].items() if not (keep and k in CREDENTIAL_VARS)})
    return True


def assume_role(state: dict[str, Any], role: str, session: str) -> tuple[str, dict[str, str]]:
    """Assume `role` on the local stack's STS; return the session's ARN and its credential variables.

    moto's STS issues real-looking temporary credentials and `get-caller-identity` reports the assumed
    role, which is where ModelShield takes identity from; moto enforces no trust policy, so any role name
    works locally (a deployed stack enforces who may assume what).
    """
    name = ROLE_ALIASES.get(role, role)
    sts = wiring.client(
        "sts",
        endpoint_url=state["endpoint"],
        region_name=REGION,
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    response = sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/{name}", RoleSessionName=session)
    creds = response["Credentials"]
    return str(response["AssumedRoleUser"]["Arn"]), {
        "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
        "AWS_SESSION_TOKEN": creds["SessionToken"],
    }
