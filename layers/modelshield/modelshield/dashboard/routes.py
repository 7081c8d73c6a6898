"""The dashboard's HTTP routes (Powertools ALBResolver): the page, its JSON, its static files.

The load balancer in front (template.yaml) signs users in with Cognito before any request gets here, and
passes query strings URL-encoded, as the local adapter does too (`query()` decodes them). Every response
carries a strict Content-Security-Policy: scripts, styles, images and fetches from this origin only, no
inline code, no framing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.event_handler import ALBResolver, Response, content_types

from modelshield.dashboard.render import render_page
from modelshield.dashboard.service import Dashboard
from modelshield.errors import ModelShieldError

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8"}  # fmt: skip


def build_app(dashboard: Callable[[], Dashboard]) -> ALBResolver:
    """The resolver for DashboardFunction and the local stack; `dashboard` is called once, lazily."""
    app = ALBResolver()

    def query(name: str) -> str:
        raw = app.current_event.get_query_string_value(name, "") or ""
        return unquote_plus(raw)

    def respond(body: str, content_type: str, status: int = 200, cache: str = "no-store") -> Response[str]:
        return Response(
            status_code=status,
            content_type=content_type,
            body=body,
            headers={**SECURITY_HEADERS, "Cache-Control": cache},
        )

    def as_json(document: Any, status: int = 200) -> Response[str]:
        return respond(json.dumps(document, sort_keys=True), content_types.APPLICATION_JSON, status)

    def filters() -> dict[str, str]:
        return {name: query(name) for name in ("outcome", "principal", "artifact")}

    @app.get("/")
    def page() -> Response[str]:
        service = dashboard()
        chosen = filters()
        html = render_page(
            service.metrics(),
            service.attempts(**chosen, cursor=query("cursor") or None),
            service.quarantine(),
            filters=chosen,
            refresh_seconds=service.settings.refresh_seconds,
        )
        return respond(html, "text/html; charset=utf-8")

    @app.get("/metrics.json")
    def metrics() -> Response[str]:
        return as_json(dashboard().metrics())

    @app.get("/attempts.json")
    def attempts() -> Response[str]:
        limit = query("limit")
        return as_json(
            dashboard().attempts(
                **filters(), cursor=query("cursor") or None, limit=int(limit) if limit.isdigit() else 25
            )
        )

    @app.get("/quarantine.json")
    def quarantine() -> Response[str]:
        return as_json(dashboard().quarantine(cursor=query("cursor") or None))

    @app.get("/verdict.json")
    def verdict() -> Response[str]:
        artifact = query("artifact")
        if not artifact:
            return as_json({"error": "UsageError", "message": "artifact= is required"}, 400)
        return as_json(dashboard().verdict(artifact, query("version") or None))

    @app.get("/jobs/errors.json")
    def job_errors() -> Response[str]:
        return as_json(dashboard().job_errors(query("job")))

    @app.get("/favicon.svg")
    @app.get("/favicon.ico")
    def favicon() -> Response[str]:
        return respond(static_file("favicon.svg"), STATIC_TYPES[".svg"], cache="public, max-age=86400")

    @app.get("/static/<name>")
    def static(name: str) -> Response[str]:
        return _static(name)

    @app.get("/static/vendor/<name>")
    def vendored(name: str) -> Response[str]:
        return _static(f"vendor/{name}")

    def _static(name: str) -> Response[str]:
        suffix = name[name.rfind(".") :] if "." in name else ""
        if name not in static_names() or suffix not in STATIC_TYPES:
            return respond("not found", "text/plain; charset=utf-8", 404)
        return respond(static_file(name), STATIC_TYPES[suffix], cache="public, max-age=300")

    @app.exception_handler(ModelShieldError)
    def domain_error(exc: ModelShieldError) -> Response[str]:
        from modelshield.api import status_for

        status = status_for(exc)
        return as_json({"error": type(exc).__name__, "message": str(exc)}, int(status))

    @app.not_found
    def not_found(exc: Exception) -> Response[str]:
        return as_json({"error": "NotFound", "message": "no such page"}, 404)

    return app


@lru_cache(maxsize=1)
def static_names() -> frozenset[str]:
    """The files under dashboard/static (an allowlist: a request names one of these or gets 404)."""
    root = resources.files("modelshield.dashboard") / "static"
    names = {p.name for p in root.iterdir() if p.is_file()}
    names |= {f"vendor/{p.name}" for p in (root / "vendor").iterdir() if p.is_file()}
    return frozenset(names)


@lru_cache(maxsize=16)
def static_file(name: str) -> str:
    root = resources.files("modelshield.dashboard") / "static"
    return (root / name).read_text(encoding="utf-8")
