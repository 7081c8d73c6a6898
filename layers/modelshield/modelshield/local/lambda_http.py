"""A Lambda function behind a local HTTP server: what the local API and dashboard servers share.

Each request becomes the event the real front door sends (API Gateway, a load balancer); the subclass
builds that event and says what a failed invocation looks like. This base owns the server, one
invocation at a time (like one Lambda execution environment), and writing the function's response back.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class LambdaHttpServer:
    """ThreadingHTTPServer on 127.0.0.1 whose requests go to `_serve`, which calls `invoke`."""

    def __init__(
        self,
        handler: Callable[[dict, Any], dict],
        context: Callable[[], Any],
        *,
        port: int,
        methods: Iterable[str],
        name: str,
    ) -> None:
        self._handler = handler
        self._context = context
        self._lock = threading.Lock()  # one invocation at a time, like one Lambda execution environment
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

        for method in methods:
            setattr(Handler, f"do_{method}", lambda request, m=method: outer._serve(request, m))
        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _serve(self, request: BaseHTTPRequestHandler, method: str) -> None:
        raise NotImplementedError

    def _failed(self, exc: Exception) -> dict[str, Any]:
        """The response the front door gives when the function raised (a 502 in both)."""
        raise NotImplementedError

    def invoke(self, event: dict) -> dict[str, Any]:
        try:
            with self._lock:
                return self._handler(event, self._context())
        except Exception as exc:  # the function failed as a Lambda would
            return self._failed(exc)

    @staticmethod
    def respond(
        request: BaseHTTPRequestHandler,
        response: dict[str, Any],
        *,
        default_headers: dict[str, str] | None = None,
        with_body: bool = True,
    ) -> None:
        raw = response.get("body") or ""
        data = base64.b64decode(raw) if response.get("isBase64Encoded") else str(raw).encode()
        request.send_response(int(response.get("statusCode", 502)))
        headers = {**(default_headers or {}), **(response.get("headers") or {})}
        for name, values in (response.get("multiValueHeaders") or {}).items():
            headers[name] = ", ".join(values)
        for name, value in headers.items():
            if name.lower() != "content-length":
                request.send_header(name, str(value))
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if with_body:
            request.wfile.write(data)
