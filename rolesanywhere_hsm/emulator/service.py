"""`Emulator`: the Roles Anywhere emulator as an object a test (or the CLI) starts and stops.

It ties the pieces together (verification, issuing, the HTTP front), keeps a record of every
request and every credential set so tests can assert on what the service saw and did, lets
client tests inject failures (5xx, throttling, dropped connections, or refusing everything for
a while) and moves its clock.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rolesanywhere_hsm.emulator.issue import IssuedCredentials, issue_credentials
from rolesanywhere_hsm.emulator.rejections import THROTTLING, Rejection
from rolesanywhere_hsm.emulator.resources import EmulatorConfig
from rolesanywhere_hsm.emulator.server import HttpResponse, make_server
from rolesanywhere_hsm.emulator.verify import ReceivedRequest, verify_create_session

__all__ = ["DISCONNECT", "Emulator", "Fault", "RecordedRequest"]

log = logging.getLogger("rolesanywhere_hsm.emulator")

DISCONNECT = "disconnect"

# Failure answers shaped like AWS's (PROTOCOL.md section 5); other statuses get a generic one.
_FAULTS: dict[int, tuple[str, str]] = {
    429: (THROTTLING, "Rate exceeded"),
    500: ("InternalServerException", "An internal error occurred. Try again."),
    502: ("BadGatewayException", "Bad Gateway"),
    503: ("ServiceUnavailableException", "Service Unavailable"),
    504: ("GatewayTimeoutException", "Gateway Timeout"),
}


@dataclass(frozen=True)
class Fault:
    """An injected answer: a status with an AWS-like error, or DISCONNECT (no answer at all)."""

    status: int | str
    error_type: str | None = None
    message: str | None = None

    @classmethod
    def of(cls, spec: int | str | Fault) -> Fault:
        if isinstance(spec, Fault):
            return spec
        if spec == DISCONNECT:
            return cls(DISCONNECT)
        if isinstance(spec, int) and 400 <= spec <= 599:
            error_type, message = _FAULTS.get(spec, ("ServiceException", f"Injected HTTP {spec}"))
            return cls(spec, error_type, message)
        raise ValueError(f"cannot inject {spec!r}: use an HTTP error status, DISCONNECT or a Fault")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the emulator received and how it answered (status 0: dropped by a fault)."""

    received_at: dt.datetime
    method: str
    path: str
    raw_query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    status: int
    error_type: str | None = None
    message: str | None = None
    detail: str | None = None  # which check refused it, for rejections
    credentials: IssuedCredentials | None = None
    injected: bool = False

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body) if self.body.strip() else None


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _json_response(status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> HttpResponse:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return HttpResponse(
        status, body,
        [("Content-Type", "application/json"), ("x-amzn-RequestId", str(uuid.uuid4())), *headers],
    )


def _error_response(status: int, error_type: str, message: str, detail: str | None = None) -> HttpResponse:
    headers = [("X-Amzn-ErrorType", error_type)]
    if detail:
        # Latin-1 only in headers; the detail is for people, an approximation is fine.
        headers.append(("X-Rah-Emulator-Detail", detail.encode("ascii", "replace").decode()[:500]))
    return _json_response(status, {"message": message}, headers)


class Emulator:
    """The Roles Anywhere emulator: `config` holds the account, the rest is the server.

    Use as a context manager (starts a background thread, stops on exit) or call start() and
    stop(). `url` is the endpoint to give a client; `requests` and `issued` are what it saw and
    handed out; `inject_failures()` queues failures; `clock` is the time it checks against.
    """

    def __init__(
        self,
        config: EmulatorConfig,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        max_records: int | None = None,
        record_bodies: bool = True,
    ) -> None:
        if not host:
            raise ValueError("an empty host would listen on every interface; name an address")
        if max_records is not None and max_records < 0:
            raise ValueError("max_records cannot be negative")
        self.config = config
        self.clock: Callable[[], dt.datetime] = clock or _utcnow
        self._host, self._port = host, port
        self._tls = (tls_cert, tls_key)
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._refusing: tuple[float, Fault] | None = None  # (monotonic end, answer)
        # A long-running emulator keeps the last `max_records` requests (the CLI: without
        # bodies); tests keep everything.
        self._requests: deque[RecordedRequest] = deque(maxlen=max_records)
        self._record_bodies = record_bodies
        self._server: Any = None
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------

    def bind(self) -> Emulator:
        """Open the listening socket without serving (the CLI writes its port file between)."""
        if self._server is None:
            self._server = make_server(self.handle, self._host, self._port, *self._tls)
        return self

    def start(self) -> Emulator:
        """Listen and serve in a daemon thread; returns self once `url` is usable."""
        if not self._started:
            self.bind()
            self._server.start_in_thread("rolesanywhere-emulator")
            self._started = True
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; the records stay readable."""
        if self._server is not None:
            self._server.stop()
        self._server = None
        self._started = False

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not listening; call start() first")
        return int(self._server.port)

    @property
    def url(self) -> str:
        """`http(s)://host:port` to pass to a client as its endpoint."""
        scheme = "https" if self._tls[0] else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self.port}"

    # -- what the account holds (shortcuts for the one-anchor setup) ------------------------

    @property
    def region(self) -> str:
        return self.config.region

    @property
    def trust_anchor_arn(self) -> str:
        return self.config.trust_anchor_arn

    @property
    def profile_arn(self) -> str:
        return self.config.profile_arn

    @property
    def role_arn(self) -> str:
        return self.config.role_arn

    # -- records, faults, clock ---------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def issued(self) -> list[IssuedCredentials]:
        return [r.credentials for r in self.requests if r.credentials is not None]

    @property
    def last_request(self) -> RecordedRequest:
        requests = self.requests
        if not requests:
            raise LookupError("the emulator has received no request")
        return requests[-1]

    @property
    def last_issued(self) -> IssuedCredentials:
        issued = self.issued
        if not issued:
            raise LookupError("the emulator has issued no credentials")
        return issued[-1]

    def clear_records(self) -> None:
        with self._lock:
            self._requests.clear()

    def inject_failures(self, failures: Iterable[int | str | Fault]) -> None:
        """The next requests, one each, get these answers instead of being verified.

        An int is an HTTP status with an AWS-like body (429 ThrottlingException, 500
        InternalServerException, 503 ServiceUnavailableException, ...); DISCONNECT closes the
        connection without an answer; a Fault sets type and message.
        """
        faults = [Fault.of(f) for f in failures]
        with self._lock:
            self._faults.extend(faults)

    def refuse_for(self, seconds: float, failure: int | str | Fault = 503) -> None:
        """Answer every request with `failure` (default 503 ServiceUnavailableException) for
        the next `seconds` of real time, as an endpoint that is down for a while; 0 stops.
        Queued `inject_failures` answers still come first."""
        fault = Fault.of(failure)
        with self._lock:
            self._refusing = (time.monotonic() + seconds, fault) if seconds > 0 else None

    @property
    def pending_failures(self) -> int:
        with self._lock:
            return len(self._faults)

    def freeze_clock(self, at: dt.datetime) -> None:
        """Check dates and validity as if it were `at` (timezone-aware) from now on."""
        if at.tzinfo is None:
            raise ValueError("give a timezone-aware datetime")
        self.clock = lambda: at

    def shift_clock(self, seconds: float) -> None:
        """Move the emulator's clock by `seconds` (negative: back) relative to the current one."""
        base = self.clock
        self.clock = lambda: base() + dt.timedelta(seconds=seconds)

    # -- the application ------------------------------------------------------------------------

    def handle(self, request: ReceivedRequest, client: tuple[str, int] | None = None) -> HttpResponse | None:
        """Answer one request (the HTTP front calls this; tests may too, without a socket)."""
        now = self.clock()
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
            if fault is None and self._refusing is not None:
                until, refusal = self._refusing
                if time.monotonic() < until:
                    fault = refusal
                else:
                    self._refusing = None
        if fault is not None:
            if fault.status == DISCONNECT:
                self._record(request, now, 0, injected=True)
                return None
            assert isinstance(fault.status, int)
            self._record(request, now, fault.status, fault.error_type, fault.message, injected=True)
            return _error_response(fault.status, fault.error_type or "", fault.message or "")
        if request.path != "/sessions":
            self._record(request, now, 404, "UnknownOperationException", "Unknown operation")
            return _error_response(404, "UnknownOperationException", "Unknown operation")
        if request.method != "POST":
            self._record(request, now, 405, "MethodNotAllowedException", "Method not allowed")
            return _error_response(405, "MethodNotAllowedException", "Method not allowed")
        try:
            verified = verify_create_session(request, self.config, now)
            issued = issue_credentials(verified, self.config, now)
        except Rejection as rejection:
            log.info("refused: %s %s (%s)", rejection.status, rejection.message, rejection.detail)
            self._record(request, now, rejection.status, rejection.error_type, rejection.message,
                         rejection.detail)
            return _error_response(rejection.status, rejection.error_type, rejection.message,
                                   rejection.detail)
        except Exception as exc:  # a bug in the emulator: answer like AWS, keep the cause
            log.exception("internal error")
            detail = f"{type(exc).__name__}: {exc}"
            self._record(request, now, 500, "InternalServerException", "Internal error", detail)
            return _error_response(500, "InternalServerException", "Internal error", detail)
        log.info("issued %s for %s as %s (%d s)", issued.access_key_id, issued.role_arn,
                 issued.role_session_name, issued.duration_seconds)
        self._record(request, now, 201, credentials=issued)
        return _json_response(201, issued.response_body())

    def _record(self, request: ReceivedRequest, now: dt.datetime, status: int,
                error_type: str | None = None, message: str | None = None,
                detail: str | None = None, *, credentials: IssuedCredentials | None = None,
                injected: bool = False) -> None:
        record = RecordedRequest(
            now, request.method, request.path, request.raw_query, tuple(request.headers),
            request.body if self._record_bodies else b"", status, error_type, message, detail,
            credentials, injected,
        )
        with self._lock:
            self._requests.append(record)
