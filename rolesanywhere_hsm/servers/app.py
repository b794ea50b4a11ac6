"""`serve`'s application: the IMDSv2 and container endpoints behind one router, a health path
for supervisors, and the access log (one line per answer, no secret: paths and statuses only,
never a header).

Handlers only read memory (the credential snapshot, an HMAC key, the container token), so the
HTTP layer calls them inline on its event loop: no thread hop per request.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import TextIO

from rolesanywhere_hsm.httpserver import AccessLog, Request, Response
from rolesanywhere_hsm.redact import redact
from rolesanywhere_hsm.servers.container import CONTAINER_PATH, ContainerApp
from rolesanywhere_hsm.servers.imds import ImdsApp, ImdsTokens
from rolesanywhere_hsm.servers.snapshot import CredentialSource, SnapshotCache

__all__ = ["HEALTH_PATH", "ServeApp", "access_logger"]

Handler = Callable[[Request], Response]

HEALTH_PATH = "/healthz"
_JSON = ("Content-Type", "application/json")
_IMDS_OFF = Response(404, b'{"message":"IMDS is off on this address"}', [_JSON])
_NOT_FOUND = Response(404, b'{"message":"Not found"}', [_JSON])


class ServeApp:
    """Routes `/latest/...` to IMDS (404 when it is off), `CONTAINER_PATH` to the container
    endpoint (404 when no token is set), `HEALTH_PATH` to the health answer.

    Exact paths are one dictionary (`routes`; add one with `route()`): a credential GET costs
    one lookup, however many paths there are. Per-request counters belong in the access log
    callable, which the HTTP layer already calls once per answer with the status and time."""

    def __init__(
        self,
        source: CredentialSource,
        *,
        role_name: str,
        imds: bool = True,
        container_token: str | None = None,
        wall_clock: Callable[[], float] = time.time,
        tokens: ImdsTokens | None = None,
    ) -> None:
        self.snapshots = SnapshotCache(source, wall_clock=wall_clock)
        self.imds = ImdsApp(self.snapshots, role_name, tokens=tokens) if imds else None
        self.container = ContainerApp(self.snapshots, container_token) if container_token else None
        self.routes: dict[str, Handler] = {HEALTH_PATH: self.health}
        if self.container is not None:
            self.routes[CONTAINER_PATH] = self.container

    def route(self, path: str, handler: Handler) -> None:
        """Answer `path` (exactly, without the query) with `handler`."""
        self.routes[path] = handler

    def __call__(self, request: Request) -> Response:
        handler = self.routes.get(request.path)
        if handler is not None:
            return handler(request)
        if request.path.startswith("/latest/"):
            return self.imds(request) if self.imds is not None else _IMDS_OFF
        return _NOT_FOUND

    def health(self, request: Request) -> Response:
        """200 while valid credentials are held, 503 while there are none (a readiness answer)."""
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"", [("Allow", "GET, HEAD")])
        snapshot = self.snapshots.get()
        if snapshot is None:
            return Response(503, b'{"status":"unavailable"}', [_JSON])
        body = json.dumps({"status": "ok", "expiration": snapshot.expiration}).encode()
        return Response(200, body, [_JSON])


class _AccessLog:
    """Lines collected and written in batches: one write per 128 lines, or per sweep of the HTTP
    layer (a quarter second), instead of one system call per request."""

    def __init__(self, stream: TextIO, prefix: str) -> None:
        self._stream = stream
        self._prefix = prefix
        self._lines: list[str] = []
        self._second = 0
        self._stamp = ""

    def __call__(self, client: tuple[str, int], method: str, target: str, status: int, size: int,
                 seconds: float) -> None:
        now = int(time.time())
        if self._second != now:
            self._second, self._stamp = now, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        if not target.isascii() or len(target) > 200:
            target = redact(target[:200])
        self._lines.append('%s: %s %s "%s %s" %d %d %.1fms\n' % (
            self._prefix, self._stamp, client[0], method, target, status, size, seconds * 1000))
        if len(self._lines) >= 128:
            self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        text, self._lines = "".join(self._lines), []
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # stderr gone (a closed pipe): serving matters more
            pass


def access_logger(stream: TextIO | None = None, prefix: str = "serve") -> AccessLog:
    """An AccessLog writing `prefix: TIME CLIENT "METHOD TARGET" STATUS BYTES MSms` lines to
    `stream` (stderr by default); the HTTP layer calls its `flush()` on every sweep and at close."""
    return _AccessLog(stream if stream is not None else sys.stderr, prefix)
