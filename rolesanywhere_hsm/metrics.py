"""The metrics of `serve` and `update`, kept as plain numbers and rendered in the Prometheus
text format by prometheus-client (the optional `metrics` extra) only when scraped.

Counting costs a dictionary update; nothing here imports prometheus-client until `render()`,
so a front end without `/metrics` traffic (and every `credential-process` run) never loads it.
The names, types and labels are documented in docs/operations.md.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from rolesanywhere_hsm.attempts import Attempt, Rotation

__all__ = ["LATENCY_BUCKETS", "Metrics", "MetricsUnavailable", "metrics_available"]

# CreateSession latency, seconds: a signature on a token takes 5..500 ms, a throttled call
# backs off for seconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsUnavailable(Exception):
    """prometheus-client is not installed."""


def metrics_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("prometheus_client") is not None


class Metrics:
    """An observer of a credential session (attempts, rotations), a counter of HTTP answers,
    and the renderer of all of it. Thread-safe: the refresh thread and the server both count."""

    def __init__(self, command: str, *, logins: Callable[[], int] | None = None) -> None:
        self.command = command
        self._logins = logins
        self._lock = threading.Lock()
        self.credentials_expiry: float | None = None
        self.certificate_not_after: float | None = None
        self.refreshes: dict[tuple[str, str], int] = {}  # (outcome, code) -> count
        self.throttled = 0
        self.latency_buckets = [0] * len(LATENCY_BUCKETS)
        self.latency_count = 0
        self.latency_sum = 0.0
        self.rotations: dict[str, int] = {}
        self.requests: dict[str, dict[int, int]] = {}  # endpoint -> status -> count

    # -- observing ---------------------------------------------------------------------------

    def __call__(self, event: object) -> None:
        if isinstance(event, Attempt):
            self._attempt(event)
        elif isinstance(event, Rotation):
            with self._lock:
                self.rotations[event.outcome] = self.rotations.get(event.outcome, 0) + 1
                if event.outcome == "applied" and event.new is not None:
                    self.certificate_not_after = event.new.not_after.timestamp()

    def _attempt(self, attempt: Attempt) -> None:
        key = (attempt.outcome, attempt.error_code or "")
        with self._lock:
            self.refreshes[key] = self.refreshes.get(key, 0) + 1
            if attempt.throttled:
                self.throttled += 1
            if attempt.certificate is not None and attempt.outcome == "success":
                self.certificate_not_after = attempt.certificate.not_after.timestamp()
            if attempt.expiration is not None:
                self.credentials_expiry = attempt.expiration.timestamp()
            self.latency_count += 1
            self.latency_sum += attempt.seconds
            for index, bound in enumerate(LATENCY_BUCKETS):
                if attempt.seconds <= bound:
                    self.latency_buckets[index] += 1

    def request(self, endpoint: str, status: int) -> None:
        """One HTTP answer (called per request: a dictionary update, no lock: the server's
        event loop is the only writer, and a scrape reads a copy)."""
        by_status = self.requests.get(endpoint)
        if by_status is None:
            by_status = self.requests[endpoint] = {}
        by_status[status] = by_status.get(status, 0) + 1

    # -- rendering ---------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """(body, content type) in the Prometheus text format."""
        try:
            from prometheus_client import CollectorRegistry, generate_latest
        except ImportError:
            raise MetricsUnavailable("prometheus-client is not installed") from None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        return generate_latest(registry), CONTENT_TYPE

    def families(self) -> list[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        with self._lock:
            expiry, not_after = self.credentials_expiry, self.certificate_not_after
            refreshes = dict(self.refreshes)
            throttled = self.throttled
            buckets, count, total = list(self.latency_buckets), self.latency_count, self.latency_sum
            rotations = dict(self.rotations)
        requests = {endpoint: dict(by_status) for endpoint, by_status in list(self.requests.items())}
        out: list[Any] = []
        g = GaugeMetricFamily("rah_credentials_expiry_timestamp_seconds",
                              "When the credentials held now expire (Unix time).")
        if expiry is not None:
            g.add_metric([], expiry)
        out.append(g)
        g = GaugeMetricFamily("rah_certificate_not_after_timestamp_seconds",
                              "The signing certificate's notAfter (Unix time).")
        if not_after is not None:
            g.add_metric([], not_after)
        out.append(g)
        c = CounterMetricFamily("rah_refreshes", "CreateSession attempts by outcome and error code.",
                                labels=["outcome", "code"])
        for outcome in ("success", "failure"):
            if not any(k[0] == outcome for k in refreshes):
                c.add_metric([outcome, ""], 0)
        for (outcome, code), value in sorted(refreshes.items()):
            c.add_metric([outcome, code], value)
        out.append(c)
        c = CounterMetricFamily("rah_throttled", "CreateSession attempts refused with ThrottlingException.")
        c.add_metric([], throttled)
        out.append(c)
        h = HistogramMetricFamily("rah_create_session_duration_seconds",
                                  "CreateSession latency, signing and retries included.")
        cumulative = [(str(bound), value) for bound, value in zip(LATENCY_BUCKETS, buckets, strict=True)]
        h.add_metric([], [*cumulative, ("+Inf", count)], total)
        out.append(h)
        c = CounterMetricFamily("rah_certificate_rotations", "Renewed certificates seen, by outcome.",
                                labels=["outcome"])
        for outcome in ("applied", "refused"):
            c.add_metric([outcome], rotations.get(outcome, 0))
        out.append(c)
        if self._logins is not None:
            c = CounterMetricFamily("rah_token_logins", "Key store logins (token sessions opened).")
            c.add_metric([], self._logins())
            out.append(c)
        c = CounterMetricFamily("rah_http_requests", "HTTP answers by endpoint and status.",
                                labels=["endpoint", "status"])
        for endpoint, by_status in sorted(requests.items()):
            for status, value in sorted(by_status.items()):
                c.add_metric([endpoint, str(status)], value)
        out.append(c)
        return out


class _Collector:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Any:
        yield from self._metrics.families()
