"""The local stack's dashboard: a small HTTP server on 127.0.0.1 that turns each request into the event
an Application Load Balancer sends to Lambda and calls the real DashboardFunction handler.

Nothing is re-implemented here: routing, rendering, headers and errors are the handler's own, so what the
browser test sees locally is what the load balancer serves in AWS (minus the Cognito sign-in, which the
load balancer does before the function is ever called).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlsplit

from modelshield.local.lambda_http import LambdaHttpServer
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


class DashboardServer(LambdaHttpServer):
    """ThreadingHTTPServer → handler(event, context) → HTTP response."""

    def __init__(
        self, handler: Callable[[dict, Any], dict], context: Callable[[], Any], port: int = 0
    ) -> None:
        super().__init__(handler, context, port=port, methods=("GET", "HEAD"), name="dashboard")

    def _failed(self, exc: Exception) -> dict[str, Any]:  # a 502 from the load balancer
        return {"statusCode": 502, "headers": {"Content-Type": "text/plain"}, "body": f"{exc}"}

    def _serve(self, request: BaseHTTPRequestHandler, method: str) -> None:
        event = alb_event("GET", request.path, dict(request.headers.items()))
        self.respond(request, self.invoke(event), with_body=method != "HEAD")
