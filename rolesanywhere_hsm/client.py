"""CreateSession over HTTPS: the only module that knows HTTP, TLS, proxies, timeouts and retries.

Signing is an `httpx.Auth`, so each attempt (including every retry) is signed afresh with a new
`X-Amz-Date`, and the signer is asked for exactly one signature per attempt. A
`RolesAnywhereClient` keeps its connection pool and is meant to live as long as a credential
server does; the one-shot `create_session()` is the session module's (a session used once).

Each call has one time budget (a `Deadline`) for all its attempts, enforced on every socket
operation, and reads at most MAX_ANSWER_BYTES of an answer: whatever the server does, a call
ends in bounded time and memory.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import ipaddress
import json
import logging
import os
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import httpcore
import httpx

from rolesanywhere_hsm import sigv4x509
from rolesanywhere_hsm.arn import SessionArns
from rolesanywhere_hsm.backoff import full_jitter
from rolesanywhere_hsm.credentials import Credentials
from rolesanywhere_hsm.deadline import DEFAULT_TIMEOUT, Deadline, check_timeout
from rolesanywhere_hsm.endpoints import resolve_endpoint
from rolesanywhere_hsm.errors import (
    SETTING,
    AnswerTooLargeError,
    ArnError,
    DeadlineExceededError,
    EndpointError,
    RolesAnywhereError,
    TlsVerificationError,
    TransportError,
    UsageError,
    service_error,
)
from rolesanywhere_hsm.files import CA_BUNDLE_LIMIT, read_regular_file
from rolesanywhere_hsm.record import Record
from rolesanywhere_hsm.redact import one_line, redact
from rolesanywhere_hsm.signers.base import Signer, SignerConfig
from rolesanywhere_hsm.spec import DEFAULT_DURATION, MAX_DURATION, MIN_DURATION  # the spec's bounds
from rolesanywhere_hsm.x509 import certificate_info

__all__ = [
    "DEFAULT_DURATION",
    "RetryPolicy",
    "RolesAnywhereClient",
    "X509SigV4Auth",
]

log = logging.getLogger("rolesanywhere_hsm.client")

# docs/protocol.md section 2.
SESSIONS_PATH = "/sessions"
_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]*?-----END CERTIFICATE-----")
# A CreateSession answer is a few KiB; anything near this is not Roles Anywhere.
MAX_ANSWER_BYTES = 1024 * 1024
# Retried answers (section 5): throttling and server faults; never other 4xx.
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class RetryPolicy(Record):
    """Full-jitter exponential backoff: attempt n waits uniform(0, min(cap, base * 2**n)).

    A throttled answer (429) is backed off in seconds, not fractions of one (the account's
    rate is counted per second, and a fleet retrying at once keeps it exceeded): up to
    `throttle_attempts` attempts, retry n waiting full jitter over min(throttle_max_delay,
    throttle_base_delay * 2**(n-1)) seconds, all within the call's deadline.

    A frozen `Record`, not a dataclass: a cold `credential-process` then makes one class fewer
    through `dataclasses` (docs/performance.md).
    """

    __slots__ = ("attempts", "base_delay", "max_delay", "throttle_attempts", "throttle_base_delay",
                 "throttle_max_delay")
    _compared = __slots__
    attempts: int
    base_delay: float
    max_delay: float
    throttle_attempts: int
    throttle_base_delay: float
    throttle_max_delay: float

    def __init__(self, attempts: int = 3, base_delay: float = 0.25, max_delay: float = 5.0,
                 throttle_attempts: int = 5, throttle_base_delay: float = 1.0,
                 throttle_max_delay: float = 8.0) -> None:
        self._set(attempts=attempts, base_delay=base_delay, max_delay=max_delay,
                  throttle_attempts=throttle_attempts, throttle_base_delay=throttle_base_delay,
                  throttle_max_delay=throttle_max_delay)

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))

    def throttle_delay(self, throttled: int, rand: float) -> float:
        """Seconds to wait after the `throttled`-th (>= 1) 429 in a row; `rand` in [0, 1)."""
        return full_jitter(throttled, rand, base=self.throttle_base_delay, cap=self.throttle_max_delay)


def _check_duration(duration_seconds: int) -> None:
    if not MIN_DURATION <= duration_seconds <= MAX_DURATION:
        error = UsageError(
            f"{SETTING} {duration_seconds} is out of range.",
            hint=f"Use {MIN_DURATION}..{MAX_DURATION} seconds.", setting="session-duration",
        )
        error.name_setting("duration_seconds")  # this method's keyword
        raise error


class X509SigV4Auth(httpx.Auth):
    """Adds the X.509 headers and the Authorization header to a CreateSession request."""

    requires_request_body = True

    def __init__(self, signer: Signer, region: str, clock: Clock = _utcnow) -> None:
        self._signer = signer
        self._region = region
        self._clock = clock
        self._serial = certificate_info(signer.certificate).serial
        self._x509 = sigv4x509.encode_certificate(signer.certificate)
        self._chain = sigv4x509.encode_chain(signer.chain) if signer.chain else None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        date = sigv4x509.amz_date(self._clock())
        request.headers["X-Amz-Date"] = date
        request.headers["X-Amz-X509"] = self._x509
        if self._chain:
            request.headers["X-Amz-X509-Chain"] = self._chain
        signed = {
            "content-type": request.headers["Content-Type"],
            "host": request.headers["Host"],
            "x-amz-date": date,
            "x-amz-x509": self._x509,
        }
        if self._chain:
            signed["x-amz-x509-chain"] = self._chain
        query: dict[str, list[str]] = {}
        for name, value in request.url.params.multi_items():
            query.setdefault(name, []).append(value)
        canonical = sigv4x509.canonical_request(
            request.method, request.url.path, query, signed, request.content
        )
        log.debug("canonical request:\n%s", canonical)
        to_sign = sigv4x509.string_to_sign(self._signer.algorithm, date, self._region, canonical)
        signature = self._signer.sign(to_sign.encode("utf-8"))
        request.headers["Authorization"] = sigv4x509.authorization_header(
            self._signer.algorithm, self._serial, date, self._region, signed, signature
        )
        yield request


def _error_from_answer(status: int, headers: httpx.Headers, body: bytes) -> RolesAnywhereError:
    """The exception for a non-2xx answer, with the server's text on one shortened line.

    A 4xx is the service refusing (ServiceError, exit 6); a 5xx that is still there after the
    retries is the service being unavailable, which is a transport failure (exit 7).
    """
    error_type = one_line(headers.get("X-Amzn-ErrorType", "").split(":", 1)[0], limit=80)
    try:
        payload = json.loads(body)
        message = payload.get("message") or payload.get("Message") or ""
    except (ValueError, RecursionError, AttributeError):
        message = ""
    message = one_line(message) if isinstance(message, str) else ""
    if status >= 500:
        said = ": ".join(part for part in (error_type, message) if part)
        said = f" ({said})" if said else ""
        return TransportError(
            f"The endpoint failed with HTTP {status}{said}.",
            hint="The service had a fault; the call was retried within the time budget. Try again later.",
        )
    if status == 429:  # throttled, whatever the body says (a proxy's own 429 has none)
        return service_error(error_type or "ThrottlingException", status, message or "Rate exceeded")
    if not error_type and not message:
        return TransportError(
            f"The endpoint answered HTTP {status} without a Roles Anywhere error.",
            hint="Check --endpoint and any proxy between you and the service.",
        )
    return service_error(error_type, status, message or f"HTTP {status}")


# --- The deadline, enforced at the socket -------------------------------------------------
# httpx's timeouts apply to each socket operation and restart with every byte, so a server
# that drips one byte a second never times out. The budget is enforced one level down instead:
# a network backend for httpcore that cuts every connect, TLS handshake, write and read to the
# time left on the deadline of the call in progress (a context variable: one client may serve
# several threads, each with its own call and deadline).


class _Watch:
    """The deadline of the call in progress on this thread, and the phase it is in (assigned
    as the call goes: a plain class with slots, no dataclass on the cold path)."""

    __slots__ = ("deadline", "phase")

    def __init__(self, deadline: Deadline, phase: str = "connecting") -> None:
        self.deadline = deadline
        self.phase = phase


_WATCH: contextvars.ContextVar[_Watch | None] = contextvars.ContextVar("rah_deadline", default=None)

_RESOLVING = "looking up the address"
_CONNECTING = "connecting"
_TLS = "in the TLS handshake"
_SENDING = "sending the request"
_WAITING = "waiting for the answer"


def _limit(timeout: float | None, phase: str, timeout_error: type[Exception]) -> float | None:
    """`timeout` cut to the time left on this thread's deadline; the timeout error at zero."""
    watch = _WATCH.get()
    if watch is None:
        return timeout
    watch.phase = phase
    left = watch.deadline.remaining()
    if left <= 0:  # settimeout(0) would make the socket non-blocking, not time out
        raise timeout_error(f"the time budget ran out {phase}")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _limit(timeout, _WAITING, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _limit(timeout, _SENDING, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        limit = _limit(timeout, _TLS, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, limit))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        addresses = [host] if _WATCH.get() is None or _is_ip_literal(host) else _resolve(host, port)
        error: Exception | None = None
        for address in addresses:  # as socket.create_connection does, each with what is left
            limit = _limit(timeout, _CONNECTING, httpcore.ConnectTimeout)
            try:
                return _DeadlineStream(self._inner.connect_tcp(address, port, limit, local_address, socket_options))
            except httpcore.ConnectError as exc:
                error = exc
            except UnicodeError:  # the resolver's IDNA step: an empty or overlong label
                raise httpcore.ConnectError(f"the host name {host!r} is not valid") from None
        assert error is not None
        raise error

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        limit = _limit(timeout, _CONNECTING, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, limit, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _resolve(host: str, port: int) -> list[str]:
    """The addresses of `host`, looked up within the time left: `getaddrinfo` takes no timeout
    and a broken resolver can hold it for tens of seconds, so it runs in a daemon thread that
    is abandoned (it ends on its own) when the budget runs out first."""
    limit = _limit(None, _RESOLVING, httpcore.ConnectTimeout)
    outcome: list[Any] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            outcome.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except Exception as exc:  # noqa: BLE001 (handed to the waiting thread)
            outcome.append(exc)
        finally:
            done.set()

    threading.Thread(target=lookup, name="rah-resolve", daemon=True).start()
    if not done.wait(limit):
        raise httpcore.ConnectTimeout(f"the time budget ran out {_RESOLVING}")
    if isinstance(outcome[0], UnicodeError):
        raise httpcore.ConnectError(f"the host name {host!r} is not valid")
    if isinstance(outcome[0], Exception):
        raise httpcore.ConnectError(str(outcome[0]))
    addresses = list(dict.fromkeys(info[4][0] for info in outcome[0]))
    if not addresses:
        raise httpcore.ConnectError(f"no address for {host!r}")
    return addresses


def _install_deadline_backend(http: httpx.Client) -> None:
    """Put the deadline backend under every transport the client may use (direct and proxies).

    httpx builds its transports (one per proxy found in the environment) without a way to pass
    an httpcore network backend, so it is set on each transport's pool after the fact. A test
    proves that a dripping server is cut at the deadline, so a change inside httpx/httpcore
    that bypasses this fails loudly rather than silently.
    """
    transports = [http._transport, *http._mounts.values()]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if backend is not None and not isinstance(backend, _DeadlineBackend):
            pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]


class RolesAnywhereClient:
    """A connection to one Roles Anywhere endpoint, reusable across many CreateSession calls.

    `timeout` is the budget of one `create_session()` call when it is given no deadline: all
    attempts, backoff and the reading of the answer together.
    """

    def __init__(
        self,
        region: str,
        *,
        endpoint: str | None = None,
        verify: bool | str = True,
        trust_env: bool = True,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy = RetryPolicy(),
        clock: Clock = _utcnow,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.region = region
        self.endpoint = resolve_endpoint(region, endpoint)
        if isinstance(timeout, httpx.Timeout):  # per-operation limits, as callers gave before budgets
            limits = [t for t in (timeout.connect, timeout.read, timeout.write, timeout.pool) if t is not None]
            timeout = max(limits) if limits else DEFAULT_TIMEOUT
        self.timeout = check_timeout(timeout)
        self._retry = retry
        self._clock = clock
        self._sleep = time.sleep
        verify_arg: bool | ssl.SSLContext = verify if isinstance(verify, bool) else _ssl_context(verify)
        if verify is True and not _may_use_tls(self.endpoint, trust_env):
            verify_arg = _unused_tls_context()  # httpx would load certifi's bundle (~25 ms) for nothing
        try:
            self._http = httpx.Client(
                base_url=self.endpoint,
                verify=verify_arg,
                trust_env=trust_env,
                timeout=self.timeout,
                transport=transport,
                headers={"User-Agent": "rolesanywhere-hsm/0.1", "Accept-Encoding": "identity"},
            )
        except httpx.InvalidURL as exc:  # what urlsplit let through and httpx does not
            raise EndpointError(
                f"The endpoint {redact(self.endpoint)} is not a valid URL ({one_line(str(exc))}).",
                hint="Give a URL such as https://rolesanywhere.us-east-1.amazonaws.com.",
            ) from None
        except (OSError, ValueError) as exc:  # a bad proxy URL
            raise UsageError(
                f"Cannot set up HTTPS: {one_line(redact(str(exc)))}.",
                hint="Check --ca-bundle / AWS_CA_BUNDLE and proxy variables.",
            ) from None
        _install_deadline_backend(self._http)

    def create_session(
        self,
        signer: Signer,
        arns: SessionArns,
        *,
        duration_seconds: int = DEFAULT_DURATION,
        role_session_name: str | None = None,
        deadline: Deadline | None = None,
    ) -> Credentials:
        """One CreateSession call, retried while the deadline allows; one signature per attempt.

        Without a `deadline`, the call gets `self.timeout` seconds from now.
        """
        if arns.region != self.region:
            raise ArnError(
                f"The trust anchor is in {arns.region} but the client signs for {self.region}.",
                hint="Drop --region or make it match the trust anchor ARN.",
            )
        _check_duration(duration_seconds)
        deadline = deadline or Deadline.after(self.timeout)
        body: dict[str, object] = {"durationSeconds": duration_seconds}
        if role_session_name is not None:
            body["roleSessionName"] = role_session_name
        content = json.dumps(body, separators=(",", ":")).encode()
        params = {
            "profileArn": str(arns.profile),
            "roleArn": str(arns.role),
            "trustAnchorArn": str(arns.trust_anchor),
        }
        auth = X509SigV4Auth(signer, self.region, self._clock)
        last_error: RolesAnywhereError | None = None
        throttled = 0  # 429s in a row: backed off by their own rule, in seconds
        attempt = 0
        while attempt < (self._retry.throttle_attempts if throttled else self._retry.attempts):
            if attempt:
                if throttled:
                    delay = self._retry.throttle_delay(throttled, random.random())
                else:
                    delay = self._retry.delay(attempt)
                if delay >= deadline.remaining():  # no time left for another attempt
                    break
                log.debug("retrying in %.2f s (attempt %d%s)", delay, attempt + 1,
                          ", throttled" if throttled else "")
                self._sleep(delay)
            attempt += 1
            if deadline.expired():
                break
            request = self._http.build_request(
                "POST",
                SESSIONS_PATH,
                params=params,
                content=content,
                headers={"Content-Type": "application/json"},
                timeout=httpx.Timeout(deadline.remaining()),
            )
            try:
                status, headers, answer = self._exchange(request, auth, deadline, attempt)
            except DeadlineExceededError as exc:
                if last_error is None:
                    raise
                raise DeadlineExceededError(  # say why there was an attempt after the first
                    f"{exc.message} The attempt before: {last_error.message}", hint=exc.hint
                ) from exc
            except TransportError as exc:
                if not exc.retryable:
                    raise
                last_error, throttled = exc, 0
                continue
            log.debug("CreateSession answered HTTP %d", status)
            if status in (200, 201):
                return _credentials_from_answer(answer)
            last_error = _error_from_answer(status, headers, answer)
            if status not in _RETRY_STATUSES:
                raise last_error
            throttled = throttled + 1 if status == 429 else 0
        if last_error is None:  # the budget was gone before the first attempt
            raise DeadlineExceededError(
                f"The {deadline.describe()} time budget ran out before {self.endpoint} could be called.",
                hint=_DEADLINE_HINT,
            )
        raise last_error

    def _exchange(
        self, request: httpx.Request, auth: httpx.Auth, deadline: Deadline, attempt: int
    ) -> tuple[int, httpx.Headers, bytes]:
        """Send one request and read its answer (at most MAX_ANSWER_BYTES) before the deadline."""
        watch = _Watch(deadline)
        token = _WATCH.set(watch)
        try:
            response = self._http.send(request, auth=auth, stream=True)
            try:
                return response.status_code, response.headers, self._read_answer(response, watch)
            finally:
                response.close()
        except httpx.TimeoutException as exc:  # every timeout is the budget's: they derive from it
            raise DeadlineExceededError(
                f"The {deadline.describe()} time budget ran out {_phase_words(watch.phase)} "
                f"{self.endpoint} (attempt {attempt}).",
                hint=_DEADLINE_HINT,
            ) from exc
        except httpx.ConnectError as exc:
            text = one_line(str(exc))
            if "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text:
                raise TlsVerificationError(
                    f"TLS verification of {self.endpoint} failed: {text}.",
                    hint="Pass --ca-bundle (or AWS_CA_BUNDLE) for a private CA.",
                ) from exc
            raise TransportError(
                f"Cannot connect to {self.endpoint}: {text}.",
                hint="Check the network, the proxy settings and --endpoint.",
            ) from exc
        except httpx.HTTPError as exc:
            raise TransportError(f"HTTP error talking to {self.endpoint}: {one_line(str(exc))}.") from exc
        finally:
            _WATCH.reset(token)

    def _read_answer(self, response: httpx.Response, watch: _Watch) -> bytes:
        """The body, streamed: refused beyond MAX_ANSWER_BYTES, cut at the deadline."""
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
            raise _too_big(self.endpoint)
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):  # we asked for none: decoding could multiply the size
            raise TransportError(
                f"{self.endpoint} answered with Content-Encoding {one_line(encoding, limit=40)}, "
                "which was not asked for.",
                hint="Check --endpoint and any proxy between you and the service.",
            )
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_raw():
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise _too_big(self.endpoint)
            if watch.deadline.expired():
                raise httpx.ReadTimeout("the time budget ran out waiting for the answer")
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RolesAnywhereClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_DEADLINE_HINT = "Check the network, the proxy and --endpoint; or give more time with --timeout / RAH_TIMEOUT."


def _phase_words(phase: str) -> str:
    return {
        _RESOLVING: "looking up the address of",
        _CONNECTING: "connecting to",
        _TLS: "in the TLS handshake with",
        _SENDING: "sending the request to",
        _WAITING: "waiting for the answer of",
    }.get(phase, "talking to")


def _too_big(endpoint: str) -> TransportError:
    return AnswerTooLargeError(
        f"The answer of {endpoint} is larger than {MAX_ANSWER_BYTES // 1024 // 1024} MiB; it was not read.",
        hint="Check --endpoint and any proxy between you and the service.",
    )


def _credentials_from_answer(answer: bytes) -> Credentials:
    try:
        payload = json.loads(answer)
    except (ValueError, RecursionError):
        raise TransportError(
            "The CreateSession answer is not JSON.", hint="Check that --endpoint points at Roles Anywhere."
        ) from None
    return Credentials.from_create_session(payload)


def _may_use_tls(endpoint: str, trust_env: bool) -> bool:
    """Whether a client for `endpoint` could ever make a TLS connection: to an https endpoint,
    or to a proxy given as https:// in the environment (httpx never follows redirects here)."""
    if not endpoint.lower().startswith("http://"):
        return True
    return trust_env and any(
        name.lower().endswith("_proxy") and value.strip().lower().startswith("https:")
        for name, value in os.environ.items()
    )


def _unused_tls_context() -> ssl.SSLContext:
    """A context for a client that makes no TLS connection: it verifies (certificate and host
    name) against no CA at all, so should it ever be used, every handshake fails closed."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _ssl_context(cafile: str) -> ssl.SSLContext:
    """A context trusting the CA bundle `cafile`, read through the bounded reader first.

    Only the PEM blocks are handed to ssl (bundles carry comments, some not ASCII); a file
    without any is tried as one DER certificate.
    """
    data = read_regular_file(cafile, what="CA bundle", limit=CA_BUNDLE_LIMIT, error=UsageError)
    blocks = _PEM_CERTIFICATE.findall(data)
    try:
        if blocks:
            return ssl.create_default_context(cadata=b"\n".join(blocks).decode("ascii"))
        return ssl.create_default_context(cadata=data)
    except (ssl.SSLError, ValueError) as exc:
        raise UsageError(
            f"The CA bundle {redact(cafile)} holds no usable certificate ({one_line(str(exc), limit=120)}).",
            hint="Give a PEM file of CA certificates with --ca-bundle / AWS_CA_BUNDLE.",
        ) from None
