"""`serve`'s application: the IMDSv2 and container endpoints behind one router, a health path
for supervisors, and the access log (one line per answer, no secret: paths and statuses only,
never a header).

Handlers only read memory (the credential snapshot, an HMAC key, the container token), so the
HTTP layer calls them inline on its event loop: no thread hop per request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from rolesanywhere_hsm.httpserver import Request, Response
from rolesanywhere_hsm.servers.accesslog import access_logger
from rolesanywhere_hsm.servers.container import CONTAINER_PATH, ContainerApp
from rolesanywhere_hsm.servers.imds import ImdsApp, ImdsTokens
from rolesanywhere_hsm.servers.snapshot import CredentialSource, SnapshotCache

__all__ = ["HEALTH_PATH", "LIVE_PATH", "METRICS_PATH", "READY_PATH", "HealthApp", "ServeApp", "access_logger"]

Handler = Callable[[Request], Response]

HEALTH_PATH = "/healthz"
LIVE_PATH = "/livez"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"
_JSON = ("Content-Type", "application/json")
_IMDS_OFF = Response(404, b'{"message":"IMDS is off on this address"}', [_JSON])
_ALIVE = b'{"status":"alive"}'
_NOT_READY = b'{"status":"unavailable"}'
_NOT_FOUND = b'{"message":"Not found"}'
_NOT_FOUND_ANSWER = Response(404, _NOT_FOUND, [_JSON])
_NO_METRICS = (b'{"message":"/metrics needs prometheus-client: '
               b'pip install \"rolesanywhere-hsm[metrics]\""}')


class HealthApp:
    """The operator's paths, for `serve` and `update --metrics-port`: /livez (the process
    answers), /readyz (valid credentials are held: 503 before the first and after expiry) and
    /metrics (Prometheus text format, when a `metrics.Metrics` is given). `ready` says whether
    valid credentials are held now; it only reads memory."""

    def __init__(self, ready: Callable[[], bool], metrics: object | None = None) -> None:
        self._ready = ready
        self.metrics = metrics

    def route(self, request: Request) -> tuple[str, Response] | None:
        """(endpoint name, answer) for the paths it owns, else None."""
        path = request.path
        if path == LIVE_PATH:
            return "livez", _get_only(request) or Response(200, _ALIVE, [_JSON])
        if path == READY_PATH:
            if (refused := _get_only(request)) is not None:
                return "readyz", refused
            return "readyz", (Response(200, b'{"status":"ready"}', [_JSON]) if self._ready()
                              else Response(503, _NOT_READY, [_JSON]))
        if path == METRICS_PATH:
            return "metrics", _get_only(request) or self._metrics()
        return None

    def __call__(self, request: Request) -> Response:
        routed = self.route(request)
        if routed is None:
            response = Response(404, _NOT_FOUND, [_JSON])
            endpoint = "other"
        else:
            endpoint, response = routed
        if self.metrics is not None:
            self.metrics.request(endpoint, response.status)  # type: ignore[attr-defined]
        return response

    def _metrics(self) -> Response:
        if self.metrics is None:
            return Response(404, _NOT_FOUND, [_JSON])
        from rolesanywhere_hsm.metrics import MetricsUnavailable

        try:
            body, content_type = self.metrics.render()  # type: ignore[attr-defined]
        except MetricsUnavailable:
            return Response(501, _NO_METRICS, [_JSON])
        return Response(200, body, [("Content-Type", content_type)])


def _get_only(request: Request) -> Response | None:
    if request.method not in ("GET", "HEAD"):
        return Response(405, b"", [("Allow", "GET, HEAD")])
    return None


class ServeApp:
    """Routes `/latest/...` to IMDS (404 when it is off), `CONTAINER_PATH` to the container
    endpoint (404 when no token is set), `HEALTH_PATH` to the health answer, and the operator's
    paths (/livez, /readyz, /metrics) to `HealthApp`.

    Exact paths are one dictionary (`routes`; add one with `route()`): a credential GET costs
    one lookup, however many paths there are. Per-request counting is one
    `metrics.request(endpoint, status)` per answer, here, and nothing else on the hot path."""

    def __init__(
        self,
        source: CredentialSource,
        *,
        role_name: str,
        imds: bool = True,
        container_token: str | None = None,
        wall_clock: Callable[[], float] = time.time,
        tokens: ImdsTokens | None = None,
        metrics: object | None = None,
    ) -> None:
        self.snapshots = SnapshotCache(source, wall_clock=wall_clock)
        self.imds = ImdsApp(self.snapshots, role_name, tokens=tokens) if imds else None
        self.container = ContainerApp(self.snapshots, container_token) if container_token else None
        self.operator = HealthApp(lambda: self.snapshots.get() is not None, metrics)
        self.metrics = metrics
        # path -> (endpoint name in the metrics, handler)
        self.routes: dict[str, tuple[str, Handler]] = {HEALTH_PATH: ("healthz", self.health)}
        for path, endpoint in ((LIVE_PATH, "livez"), (READY_PATH, "readyz"), (METRICS_PATH, "metrics")):
            self.routes[path] = (endpoint, self._operator)
        if self.container is not None:
            self.routes[CONTAINER_PATH] = ("container", self.container)

    def route(self, path: str, handler: Handler, endpoint: str = "other") -> None:
        """Answer `path` (exactly, without the query) with `handler`, counted as `endpoint`."""
        self.routes[path] = (endpoint, handler)

    def __call__(self, request: Request) -> Response:
        routed = self.routes.get(request.path)
        if routed is not None:
            endpoint, handler = routed
            response = handler(request)
        elif request.path.startswith("/latest/"):
            endpoint = "imds"
            response = self.imds(request) if self.imds is not None else _IMDS_OFF
        else:
            endpoint, response = "other", _NOT_FOUND_ANSWER
        metrics = self.metrics
        if metrics is not None:  # a dictionary update per answer; no allocation per request
            metrics.request(endpoint, response.status)  # type: ignore[attr-defined]
        return response

    def _operator(self, request: Request) -> Response:
        routed = self.operator.route(request)
        return routed[1] if routed is not None else _NOT_FOUND_ANSWER

    def health(self, request: Request) -> Response:
        """200 while valid credentials are held, 503 while there are none (a readiness answer)."""
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"", [("Allow", "GET, HEAD")])
        snapshot = self.snapshots.get()
        if snapshot is None:
            return Response(503, b'{"status":"unavailable"}', [_JSON])
        body = json.dumps({"status": "ok", "expiration": snapshot.expiration}).encode()
        return Response(200, body, [_JSON])


