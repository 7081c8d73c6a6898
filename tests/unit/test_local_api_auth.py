"""The local API's IAM authorization: a SigV4 signature made with the caller's credentials, checked the way
API Gateway checks it, is the only thing that names the caller; and the CLI's client turns the API's
error bodies back into the errors (and exit codes) the service raises."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from modelshield import errors
from modelshield.api_client import error_class
from modelshield.local.api_server import Unauthorized, rest_event, verify_sigv4

ALICE = "arn:aws:sts::123456789012:assumed-role/ModelShieldSecurityEngineer/alice"
KEYS = {"ASIAALICE": ("alice-secret", "alice-token", ALICE)}
URL = "http://127.0.0.1:4567/access/requests/req-1/approve"
BODY = json.dumps({"reason": "SEC-42"}).encode()


def signed(
    *, key: str = "ASIAALICE", secret: str = "alice-secret", token: str | None = "alice-token"
) -> tuple[dict[str, str], datetime]:
    request = AWSRequest(method="POST", url=URL, data=BODY, headers={"Content-Type": "application/json"})
    SigV4Auth(ReadOnlyCredentials(key, secret, token), "execute-api", "us-east-1").add_auth(request)
    headers = dict(request.headers.items())
    headers["Host"] = "127.0.0.1:4567"  # what urllib sends
    stamp = datetime.strptime(headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return headers, stamp


def verify(headers: dict[str, str], now: datetime, body: bytes = BODY, url: str = URL) -> tuple[str, str]:
    return verify_sigv4("POST", url, headers, body, KEYS.get, now)


def test_a_request_signed_with_the_callers_credentials_names_the_caller() -> None:
    # Given a request signed with Alice's session credentials
    headers, now = signed()
    # When the server checks it
    arn, key = verify(headers, now)
    # Then the identity is the session the credentials belong to
    assert (arn, key) == (ALICE, "ASIAALICE")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"secret": "guessed"}, "does not match"),
        ({"key": "ASIAUNKNOWN"}, "security token included in the request is invalid"),
        ({"token": "someone-elses-token"}, "security token included in the request is invalid"),
    ],
)
def test_a_request_not_signed_by_the_callers_own_credentials_is_refused(
    change: dict[str, str], expected: str
) -> None:
    # Given a request signed with a wrong secret, an unknown key or another session's token
    headers, now = signed(**change)
    # Then it is refused, as API Gateway refuses it
    with pytest.raises(Unauthorized, match=expected):
        verify(headers, now)


def test_a_signed_request_whose_body_or_path_was_changed_is_refused() -> None:
    headers, now = signed()
    with pytest.raises(Unauthorized, match="does not match"):
        verify(headers, now, body=json.dumps({"reason": "other"}).encode())
    with pytest.raises(Unauthorized, match="does not match"):
        verify(headers, now, url=URL.replace("approve", "deny"))


def test_an_unsigned_or_stale_request_is_refused() -> None:
    headers, now = signed()
    with pytest.raises(Unauthorized, match="Missing Authentication Token"):
        verify({k: v for k, v in headers.items() if k != "Authorization"}, now)
    with pytest.raises(Unauthorized, match="Signature expired"):
        verify(headers, now + timedelta(minutes=6))


def test_the_function_receives_only_the_verified_identity() -> None:
    # Given a verified request whose body claims to come from someone else
    event = rest_event(
        "POST",
        "/access/requests/req-1/approve?x=1",
        {"Content-Type": "application/json"},
        json.dumps({"approver": "arn:aws:iam::123456789012:role/Other"}).encode(),
        caller=ALICE,
        access_key="ASIAALICE",
    )
    # Then the request context carries the verified caller, the path and query as API Gateway sends them
    assert event["requestContext"]["identity"]["userArn"] == ALICE
    assert event["path"] == "/access/requests/req-1/approve"
    assert event["queryStringParameters"] == {"x": "1"}


@pytest.mark.parametrize(
    ("name", "status", "expected"),
    [
        ("AccessDenied", 403, errors.AccessDenied),
        ("RequestConflict", 409, errors.RequestConflict),
        ("RequestNotFound", 404, errors.RequestNotFound),
        (None, 403, errors.AccessDenied),  # API Gateway's own refusal: {"message": ...}
        ("NotAnError", 422, errors.UsageError),
        ("os", 500, errors.StorageError),  # a name that is not a ModelShield error is not trusted
    ],
)
def test_the_apis_error_bodies_become_the_services_errors(
    name: str | None, status: int, expected: type[errors.ModelShieldError]
) -> None:
    assert error_class(name, status) is expected
