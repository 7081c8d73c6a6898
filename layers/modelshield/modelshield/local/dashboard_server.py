"""The local stack's dashboard: a small HTTP server on 127.0.0.1 that turns each request into the event
an Application Load Balancer sends to Lambda and calls the real DashboardFunction handler.

Nothing is re-implemented here: routing, rendering, headers and errors are the handler's own, so what the
browser test sees locally is what the load balancer serves in AWS (minus the Cognito sign-in, which the
load balancer does before the function is ever called).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlsplit

from modelshield.local.template import ACCOUNT_ID, REGION

TARGET_GROUP_ARN = f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT_ID}:targetgroup/modelshield-local-dash/0"


def alb_event(method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"") -> dict:
    """The ALB → Lambda event for one request. Query values stay URL-encoded, as the ALB sends them."""
    parts = urlsplit(target)
    query = {k: v for k, v in parse_qsl(parts.query, keep_blank_values=True)}

    return {
        "requestContext": {"elb": {"targetGroupArn": TARGET_GROUP_ARN}},
        "httpMethod": method,
        "path": parts.path or "/",
        "queryStringParameters": {k: quote_plus(v) for k, v in query.items()},
        "headers": {k.lower(): v for k, v in (headers or {}).items()},
        "body": base64.b64encode(body).decode() if body else "",
        "isBase64Encoded": bool(body),
    }


class DashboardServer:
    """ThreadingHTTPServer → handler(event, context) → HTTP response."""

    def __init__(
        self, handler: Callable[[dict, Any], dict], context: Callable[[], Any], port: int = 0
    ) -> None:
        self._handler = handler
        self._context = context
        self._lock = threading.Lock()  # one invocation at a time, like one Lambda execution environment
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer._serve(self, "GET")

            def do_HEAD(self) -> None:
                outer._serve(self, "HEAD")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="dashboard", daemon=True)

    def start(self) -> DashboardServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _serve(self, request: BaseHTTPRequestHandler, method: str) -> None:
        event = alb_event("GET", request.path, dict(request.headers.items()))
        try:
            with self._lock:
                response = self._handler(event, self._context())
        except Exception as exc:  # the handler failed as a Lambda would: a 502 from the load balancer
            response = {"statusCode": 502, "headers": {"Content-Type": "text/plain"}, "body": f"{exc}"}
        body = response.get("body") or ""
        data = base64.b64decode(body) if response.get("isBase64Encoded") else str(body).encode()
        request.send_response(int(response.get("statusCode", 502)))
        headers = dict(response.get("headers") or {})
        for name, values in (response.get("multiValueHeaders") or {}).items():
            headers[name] = ", ".join(values)
        for name, value in headers.items():
            if name.lower() != "content-length":
                request.send_header(name, str(value))
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if method != "HEAD":
            request.wfile.write(data)
