"""`modelshield access request|approve|deny|list|show|decrypt`: decryption authorization from the shell.

The caller's principal comes from `sts get-caller-identity`, i.e. from the credentials in use; it cannot
be typed on the command line, so nobody approves as somebody else. `request`, `list`, `show`, `approve`
and `deny` go through the stack's HTTP API (`MODELSHIELD_API_URL`), SigV4-signed with the caller's
credentials: only the API's role may create grants on the vault key, and the requester and the approver are
the identity the API verified, not a name or setting of the CLI's environment. `decrypt` asks the API to
authorize it (the release checks and the audit record run under the API's role, for the signing identity)
and then decrypts here, with the consumer's own credentials through the KMS grant, so the plaintext never
passes through the API.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from modelshield import wiring
from modelshield.access import MAX_REASON_CHARS, DecryptAuthorization, decrypt_authorized
from modelshield.cli.output import add_format_flag, print_json, print_table
from modelshield.errors import ModelShieldError
from modelshield.models import AccessRequest, RequestStatus


def register(sub: Any) -> None:
    access = sub.add_parser("access", help="request, approve and use decryption access to artifacts")
    access_sub = access.add_subparsers(dest="access_command", metavar="ACTION")
    access_sub.required = True

    req = access_sub.add_parser(
        "request",
        help="ask for decryption access to an artifact",
        description="Ask for a time-limited KMS grant to decrypt one artifact version. A Security Engineer "
        "(a different principal) approves or denies it; you are identified by your AWS credentials.",
        epilog="examples:\n"
        '  modelshield access request "$INGEST_BUCKET/models/model.pt" --reason "serve v2" --hours 8\n'
        '  REQUEST_ID=$(modelshield access request "$INGEST_BUCKET/models/model.pt" --reason r --hours 1 -q)',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    req.add_argument("artifact", help="artifact id: <bucket>/<key>")
    req.add_argument("--version", help="artifact version id (default: the latest recorded)")
    req.add_argument("--reason", required=True, help="why you need it (kept in the audit log)")
    req.add_argument("--hours", type=int, required=True, help="how long the grant should last, in hours")
    req.add_argument("-q", "--quiet", action="store_true", help="print only the new request's id")
    add_format_flag(req)
    req.set_defaults(handler=cmd_request)

    for name, help_text in (
        ("approve", "approve a pending request (Security Engineers; never the requester)"),
        ("deny", "deny a pending request (Security Engineers)"),
    ):
        decide = access_sub.add_parser(
            name,
            help=help_text,
            description=f"{help_text[0].upper()}{help_text[1:]}. Sent to the stack's API "
            "(MODELSHIELD_API_URL, signed with your credentials); you must be the stack's Security Engineer "
            "role (SecurityEngineerRoleName). On the local stack act as one with "
            '`eval "$(modelshield local assume security-engineer)"`.',
            epilog=f'example:\n  modelshield access {name} REQUEST_ID --reason "ticket SEC-42"',
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        decide.add_argument("request_id", metavar="REQUEST_ID", help="from `access request` or `access list`")
        decide.add_argument(
            "--reason", default="", help="why (kept in the audit log with your identity; default: none)"
        )
        add_format_flag(decide)
        decide.set_defaults(handler=cmd_decide, decision=name)

    lst = access_sub.add_parser("list", help="access requests, newest first")
    lst.add_argument("--status", choices=[s.value for s in RequestStatus], type=str.upper)
    lst.add_argument("--artifact")
    lst.add_argument("--mine", action="store_true", help="only requests made by the current principal")
    add_format_flag(lst)
    lst.set_defaults(handler=cmd_list)

    show = access_sub.add_parser("show", help="one request")
    show.add_argument("request_id")
    add_format_flag(show)
    show.set_defaults(handler=cmd_show)

    dec = access_sub.add_parser("decrypt", help="decrypt an approved artifact with your grant")
    dec.add_argument("request_id")
    dec.add_argument("-o", "--output", required=True, type=Path)
    add_format_flag(dec)
    dec.set_defaults(handler=cmd_decrypt)


def _print(requests: list[AccessRequest], fmt: str) -> None:
    if fmt == "json":
        print_json({"requests": [r.public() for r in requests]})
        return
    print_table(
        ["REQUEST", "STATUS", "ARTIFACT", "VERSION", "REQUESTER", "HOURS", "EXPIRES", "DECIDED BY"],
        [
            (
                r.request_id,
                r.status.value,
                r.artifact_id,
                r.version_id,
                r.requester,
                r.hours,
                r.expires_at,
                r.decided_by,
            )
            for r in requests
        ],
    )


def cmd_request(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"artifact_id": args.artifact, "reason": args.reason, "hours": args.hours}
    if args.version:
        body["version_id"] = args.version
    request = AccessRequest.model_validate(wiring.api_client().post("/access/requests", body))
    if args.quiet:
        print(request.request_id)
    else:
        _print([request], args.format)
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    path = f"/access/requests/{quote(args.request_id, safe='')}/{args.decision}"
    answer = wiring.api_client().post(path, {"reason": args.reason})
    _print([AccessRequest.model_validate(answer)], args.format)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    query = {
        "status": args.status,
        "artifact_id": args.artifact,
        "mine": "true" if args.mine else None,  # the API filters on the identity it verified
    }
    given = {k: v for k, v in query.items() if v}
    answer = wiring.api_client().get("/access/requests" + (f"?{urlencode(given)}" if given else ""))
    _print([AccessRequest.model_validate(r) for r in answer.get("requests", [])], args.format)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    answer = wiring.api_client().get(f"/access/requests/{quote(args.request_id, safe='')}")
    _print([AccessRequest.model_validate(answer)], args.format)
    return 0


def cmd_decrypt(args: argparse.Namespace) -> int:
    """The API authorizes (and audits) the decrypt for the signing identity and hands back the grant;
    the decrypt itself runs here, under the caller's own credentials, which KMS accepts only with it."""
    api = wiring.api_client()
    path = f"/access/requests/{quote(args.request_id, safe='')}"
    authorization = DecryptAuthorization.model_validate(api.post(f"{path}/authorize-decrypt", {}))
    try:
        sha256 = decrypt_authorized(
            authorization, args.output, kms=wiring.client("kms"), s3=wiring.s3_client()
        )
    except ModelShieldError as exc:
        with contextlib.suppress(ModelShieldError):  # the decrypt's own error is the one to show
            api.post(f"{path}/decrypt-error", {"reason": str(exc)[:MAX_REASON_CHARS]})
        raise
    if args.format == "json":
        print_json({"request_id": args.request_id, "output": str(args.output), "sha256": sha256})
    else:
        print(f"decrypted to {args.output} (sha256 {sha256})")
    return 0
