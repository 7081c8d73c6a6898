"""The local stack's HTTP API: what API Gateway with IAM authorization does, in front of the real ApiFunction.

API Gateway (AWS_IAM auth) checks each request's SigV4 signature against the caller's credentials and
hands the function the verified identity in `requestContext.identity.userArn`; the function never sees a
name the caller typed. This server does the same on 127.0.0.1: it finds the secret of the request's access
key in moto's own STS/IAM state (the credentials `local assume` hands out, or the stack's own), recomputes
the signature with botocore's SigV4 signer over exactly the headers the client signed, and refuses (403,
as API Gateway does) a missing, unknown, expired or wrong signature. Only then does it build the REST API
event and call the real `functions/api/app.py` handler: routing, validation, errors and the approval
logic are the function's own.
"""

from __future__ import annotations

import hmac
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from modelshield.local.lambda_http import LambdaHttpServer
from modelshield.local.template import ACCOUNT_ID, REGION

SERVICE = "execute-api"
MAX_CLOCK_SKEW = timedelta(minutes=5)  # API Gateway refuses a signature dated further from its clock
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)"
    r"/aws4_request,\s*SignedHeaders=(?P<signed>[^,]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)


class Unauthorized(Exception):
    """The request is not signed by credentials this stack issued (API Gateway answers 403)."""


# (secret, session token or None, caller ARN) of an access key, or None when the stack never issued it.
CredentialLookup = Callable[[str], "tuple[str, str | None, str] | None"]


def moto_credentials(stack_key: str, stack_secret: str) -> CredentialLookup:
    """Look access keys up in moto's STS and IAM state, in this process (the local stack's moto server).

    The stack's own key (FAKE_CREDENTIALS) is answered as moto's `get-caller-identity` answers it."""
    from moto.iam.models import iam_backends
    from moto.sts.models import sts_backends

    def lookup(access_key: str) -> tuple[str, str | None, str] | None:
        for account in list(sts_backends):
            for backend in sts_backends[account].values():
                role = backend.get_assumed_role_from_access_key(access_key)
                if role is not None:
                    if role.expiration <= datetime.now(UTC).replace(tzinfo=None):
                        return None
                    return role.secret_access_key, role.session_token, role.arn
        for account in list(iam_backends):
            for backend in iam_backends[account].values():
                user = backend.get_user_from_access_key_id(access_key)
                if user is not None:
                    for key in user.access_keys:
                        if key.access_key_id == access_key and key.status == "Active":
                            return key.secret_access_key, None, user.arn
        if access_key == stack_key:
            return stack_secret, None, f"arn:aws:sts::{ACCOUNT_ID}:user/moto"
        return None

    return lookup


def verify_sigv4(
    method: str, url: str, headers: dict[str, str], body: bytes, lookup: CredentialLookup, now: datetime
) -> tuple[str, str]:
    """(caller ARN, access key) of a correctly signed request; Unauthorized otherwise."""
    lowered = {k.lower(): v for k, v in headers.items()}
    match = _AUTH.match(lowered.get("authorization", "").strip())
    if not match:
        raise Unauthorized("Missing Authentication Token: sign the request with SigV4 (service execute-api)")
    if (match["region"], match["service"]) != (REGION, SERVICE):
        raise Unauthorized(f"the credential scope must be {REGION}/{SERVICE}")
    stamp = lowered.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise Unauthorized("the request has no valid X-Amz-Date") from None
    if stamp[:8] != match["date"] or abs(now - signed_at) > MAX_CLOCK_SKEW:
        raise Unauthorized("Signature expired: the request's date is too far from the server's clock")
    found = lookup(match["key"])
    if found is None:
        raise Unauthorized("The security token included in the request is invalid")
    secret, token, arn = found
    if token is not None and not hmac.compare_digest(token, lowered.get("x-amz-security-token", "")):
        raise Unauthorized("The security token included in the request is invalid")
    signed = match["signed"].split(";")
    if "host" not in signed or any(name not in lowered for name in signed):
        raise Unauthorized("the signed headers must include host and be present in the request")
    request = AWSRequest(method=method, url=url, data=body, headers={n: lowered[n] for n in signed})
    request.context["timestamp"] = stamp
    signer = SigV4Auth(ReadOnlyCredentials(match["key"], secret, token), SERVICE, REGION)
    canonical = signer.canonical_request(request)
    if signer.signed_headers(signer.headers_to_sign(request)) != match["signed"]:
        raise Unauthorized("the signed headers do not match the request")
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, match["signature"]):
        raise Unauthorized("The request signature we calculated does not match the signature you provided")
    return arn, match["key"]


def rest_event(
    method: str, target: str, headers: dict[str, str], body: bytes, *, caller: str, access_key: str
) -> dict[str, Any]:
    """The API Gateway REST (proxy) event for one verified request, identity included."""
    parts = urlsplit(target)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    multi: dict[str, list[str]] = {}
    for key, value in pairs:
        multi.setdefault(key, []).append(value)
    text = body.decode("utf-8", errors="strict") if body else None
    resource = caller.split(":", 5)[-1]
    return {
        "resource": parts.path,
        "path": parts.path,
        "httpMethod": method,
        "headers": dict(headers),
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in multi.items()} or None,
        "multiValueQueryStringParameters": multi or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": parts.path,
            "httpMethod": method,
            "path": parts.path,
            "stage": "local",
            "requestId": uuid.uuid4().hex,
            "accountId": ACCOUNT_ID,
            "apiId": "local",
            "protocol": "HTTP/1.1",
            "identity": {
                "accountId": ACCOUNT_ID,
                "caller": resource,
                "user": resource,
                "userArn": caller,
                "accessKey": access_key,
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("User-Agent", ""),
            },
        },
        "body": text,
        "isBase64Encoded": False,
    }


class ApiServer(LambdaHttpServer):
    """ThreadingHTTPServer → SigV4 check → handler(REST event, context) → HTTP response."""

    def __init__(
        self,
        handler: Callable[[dict, Any], dict],
        context: Callable[[], Any],
        lookup: CredentialLookup,
        port: int = 0,
    ) -> None:
        super().__init__(handler, context, port=port, methods=("GET", "POST", "PUT", "DELETE"), name="api")
        self._lookup = lookup

    def _failed(self, exc: Exception) -> dict[str, Any]:  # API Gateway's 502
        return {"statusCode": 502, "body": json.dumps({"message": f"internal error: {exc}"})}

    def _serve(self, request: BaseHTTPRequestHandler, method: str) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        headers = dict(request.headers.items())
        host = request.headers.get("Host") or f"127.0.0.1:{self.port}"
        try:
            caller, key = verify_sigv4(
                method, f"http://{host}{request.path}", headers, body, self._lookup, datetime.now(UTC)
            )
            event = rest_event(method, request.path, headers, body, caller=caller, access_key=key)
        except Unauthorized as exc:
            response: dict[str, Any] = {"statusCode": 403, "body": json.dumps({"message": str(exc)})}
        except UnicodeDecodeError:
            response = {"statusCode": 400, "body": json.dumps({"message": "the body is not UTF-8"})}
        else:
            response = self.invoke(event)
        self.respond(request, response, default_headers={"Content-Type": "application/json"})
