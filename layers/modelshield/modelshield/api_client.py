"""The CLI's way into the HTTP API: SigV4-signed requests with the caller's own credentials.

Some actions may only happen inside ModelShield: in AWS only the ApiFunction's role may create KMS
grants (the vault key policy), so `access approve|deny` cannot be done by a CLI talking to DynamoDB and
KMS itself. The CLI sends them to the API instead, signed with the caller's credentials; API Gateway's
IAM authorization verifies the signature and gives the function the caller's identity, which is where the
approver's name comes from (never from the request body). The local stack serves the same function behind
the same check (`modelshield.local.api_server`).

Errors come back as `{"error": "<ModelShieldError subclass>", "message": ...}` and are raised here as that
class, so the CLI's exit codes and one-line messages are the same as when it ran the service itself.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from modelshield import errors
from modelshield.errors import AccessDenied, ModelShieldError, StorageError

SERVICE = "execute-api"
TIMEOUT_SECONDS = 35  # API Gateway's own limit is 29 s

_BY_STATUS: dict[int, type[ModelShieldError]] = {
    HTTPStatus.BAD_REQUEST: errors.UsageError,
    HTTPStatus.UNPROCESSABLE_ENTITY: errors.UsageError,
    HTTPStatus.FORBIDDEN: AccessDenied,
    HTTPStatus.UNAUTHORIZED: AccessDenied,
    HTTPStatus.NOT_FOUND: errors.ArtifactNotFound,
    HTTPStatus.CONFLICT: errors.RequestConflict,
}


def error_class(name: str | None, status: int) -> type[ModelShieldError]:
    """The exception the API's error body names, else the one its HTTP status implies."""
    named = getattr(errors, name or "", None)
    if isinstance(named, type) and issubclass(named, ModelShieldError):
        return named
    return _BY_STATUS.get(status, StorageError)


class ApiClient:
    """POST/GET JSON to the ModelShield API, signed with SigV4 for `execute-api`."""

    def __init__(self, url: str, *, credentials: Callable[[], Any], region: str) -> None:
        self.url = url.rstrip("/")
        self._credentials = credentials  # returns botocore frozen credentials (or None)
        self.region = region

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._send("POST", path, json.dumps(body).encode())

    def get(self, path: str) -> dict[str, Any]:
        return self._send("GET", path, b"")

    def _send(self, method: str, path: str, data: bytes) -> dict[str, Any]:
        credentials = self._credentials()
        if credentials is None:
            raise errors.ConfigError("no AWS credentials to sign the API request with")
        request = AWSRequest(
            method=method,
            url=f"{self.url}{path}",
            data=data or None,
            headers={"Content-Type": "application/json"} if data else {},
        )
        SigV4Auth(credentials, SERVICE, self.region).add_auth(request)
        prepared = urllib.request.Request(  # noqa: S310 - the stack's API URL (https, or the local stack)
            request.url, data=data or None, method=method, headers=dict(request.headers.items())
        )
        try:
            with urllib.request.urlopen(prepared, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
                return _json(response.read(), response.status, self.url)
        except urllib.error.HTTPError as exc:
            answer = _json(exc.read(), exc.code, self.url, strict=False)
            message = str(
                answer.get("message") or _details(answer) or f"HTTP {exc.code} from {self.url}{path}"
            )
            raise error_class(answer.get("error"), exc.code)(message) from None
        except urllib.error.URLError as exc:
            raise StorageError(
                f"cannot reach the ModelShield API at {self.url}: {exc.reason}; check MODELSHIELD_API_URL "
                '(the stack\'s ApiUrl output, or `eval "$(modelshield local env)"`)'
            ) from None


def _details(answer: dict[str, Any]) -> str:
    """The request-validation errors Powertools answers 422 with, as one line."""
    details = answer.get("detail")
    if not isinstance(details, list):
        return ""
    parts = [
        f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg', '')}"
        for d in details
        if isinstance(d, dict)
    ]
    return "invalid request: " + "; ".join(parts) if parts else ""


def _json(raw: bytes, status: int, url: str, *, strict: bool = True) -> dict[str, Any]:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        if not strict:
            return {}
        raise StorageError(f"the API at {url} answered HTTP {status} with a body that is not JSON") from None
    return value if isinstance(value, dict) else {"value": value}
