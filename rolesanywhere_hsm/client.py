"""CreateSession over HTTPS: the only module that decides how HTTP is sent, with its TLS context,
proxies, time budget, retries and error mapping.

Two paths send the request, and every client test runs against both: the standard-library
path (rolesanywhere_hsm.directhttp) whenever no proxy applies, as httpx would decide
(rolesanywhere_hsm.proxyenv), so that a cold `credential-process` does not load httpx; and the
httpx path (rolesanywhere_hsm.httpxpath) for proxies, for a caller's own httpx transport, and
for any endpoint or proxy setting in a form the direct path leaves to it. Both sign through
rolesanywhere_hsm.sigv4request, so each attempt (including every retry) is signed afresh with a
new `X-Amz-Date` and the signer is asked for exactly one signature per attempt. A
`RolesAnywhereClient` is meant to live as long as a credential server does (the httpx path keeps
its connection pool); the one-shot `create_session()` is the session module's.

Each call has one time budget (a `Deadline`) for all its attempts, enforced on every socket
operation of either path (rolesanywhere_hsm.netwatch), and reads at most MAX_ANSWER_BYTES of an
answer: whatever the server does, a call ends in bounded time and memory.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any

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
from rolesanywhere_hsm.lazylog import get_logger
from rolesanywhere_hsm.netwatch import WATCH, Watch, phase_words
from rolesanywhere_hsm.proxyenv import goes_direct
from rolesanywhere_hsm.record import Record
from rolesanywhere_hsm.redact import one_line, redact
from rolesanywhere_hsm.signers.base import Signer, SignerConfig

TYPE_CHECKING = False
if TYPE_CHECKING:
    import httpx
from rolesanywhere_hsm.sigv4request import RequestSigner
from rolesanywhere_hsm.spec import DEFAULT_DURATION, MAX_DURATION, MIN_DURATION  # the spec's bounds

__all__ = [
    "DEFAULT_DURATION",
    "RetryPolicy",
    "RolesAnywhereClient",
    "X509SigV4Auth",
]

log = get_logger("rolesanywhere_hsm.client")  # logging only when a line can show

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


def _error_from_answer(status: int, headers: Any, body: bytes) -> RolesAnywhereError:
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


# Which path a client sends with: "auto" is the standard-library path when no proxy applies
# (and the endpoint has a form it serves), else httpx; "httpx" is httpx always. A client's
# `http_client` argument overrides it (the tests run every client test on both).
HTTP_CLIENT = "auto"
_HTTP_CLIENTS = ("auto", "httpx")
# Set by a front end that owns its process (cli.fast.import_http_client): loads the httpx path
# without the modules one request never uses. None: a plain import.
load_httpx_path: Callable[[], None] | None = None
_HEADERS = {"User-Agent": "rolesanywhere-hsm/0.1", "Accept-Encoding": "identity"}


class RolesAnywhereClient:
    """A connection to one Roles Anywhere endpoint, reusable across many CreateSession calls.

    `timeout` is the budget of one `create_session()` call when it is given no deadline: all
    attempts, backoff and the reading of the answer together. `transport` (an httpx transport)
    puts the client on the httpx path; `http_client` ("auto" or "httpx", default HTTP_CLIENT)
    says whether the standard-library path may be used when no proxy applies.
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
        http_client: str | None = None,
    ) -> None:
        self.region = region
        self.endpoint = resolve_endpoint(region, endpoint)
        if not isinstance(timeout, (int, float)) and hasattr(timeout, "connect"):  # an httpx.Timeout:
            # per-operation limits, as callers gave before budgets
            limits = [t for t in (timeout.connect, timeout.read, timeout.write, timeout.pool) if t is not None]
            timeout = max(limits) if limits else DEFAULT_TIMEOUT
        self.timeout = check_timeout(timeout)
        self._retry = retry
        self._clock = clock
        self._sleep = time.sleep
        choice = HTTP_CLIENT if http_client is None else http_client
        if choice not in _HTTP_CLIENTS:
            raise ValueError(f"http_client must be one of {_HTTP_CLIENTS}, not {choice!r}")
        context: ssl.SSLContext | None = None if isinstance(verify, bool) else _ssl_context(verify)
        self._path: Any = None
        if choice == "auto" and transport is None:
            self._path = _direct_path(self.endpoint, verify, context, trust_env)
        if self._path is None:
            self._path = _httpx_path(self.endpoint, verify, context, trust_env, self.timeout, transport)
        log.debug("sending with the %s path", self._path.name)

    @property
    def http_client(self) -> str:
        """The path this client sends with: "direct" (the standard library) or "httpx"."""
        return str(self._path.name)

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
        signing = RequestSigner(signer, self.region, self._clock)
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
            try:
                status, headers, answer = self._exchange(params, content, signing, deadline, attempt)
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
        self, params: dict[str, str], content: bytes, signing: RequestSigner, deadline: Deadline, attempt: int
    ) -> tuple[int, Any, bytes]:
        """Send one signed request and read its answer (at most MAX_ANSWER_BYTES) before the
        deadline; either path's failures become the same errors with the same words."""
        path = self._path
        watch = Watch(deadline)
        token = WATCH.set(watch)
        try:
            response = path.send(SESSIONS_PATH, params, content, "application/json", signing, deadline.remaining())
            try:
                return response.status_code, response.headers, self._read_answer(response, watch)
            finally:
                response.close()
        except path.timeout_errors as exc:  # every timeout is the budget's: they derive from it
            raise DeadlineExceededError(
                f"The {deadline.describe()} time budget ran out {_phase_words(watch.phase)} "
                f"{self.endpoint} (attempt {attempt}).",
                hint=_DEADLINE_HINT,
            ) from exc
        except path.connect_errors as exc:
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
        except path.http_errors as exc:
            raise TransportError(f"HTTP error talking to {self.endpoint}: {one_line(str(exc))}.") from exc
        finally:
            WATCH.reset(token)

    def _read_answer(self, response: Any, watch: Watch) -> bytes:
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
                raise self._path.read_timeout("the time budget ran out waiting for the answer")
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self._path.close()

    def __enter__(self) -> RolesAnywhereClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _direct_path(endpoint: str, verify: bool | str, context: ssl.SSLContext | None, trust_env: bool) -> Any:
    """The standard-library path, when httpx would connect directly too; else None."""
    from rolesanywhere_hsm.directhttp import DirectPath, parse_endpoint

    parsed = parse_endpoint(endpoint)
    if parsed is None or not goes_direct(parsed[0], parsed[1], os.environ, trust_env=trust_env,
                                         platform=sys.platform):
        return None
    if parsed[0] == "https" and context is None:
        context = _httpx_default_context(trust_env) if verify is True else _unverified_context()
    return DirectPath(endpoint, ssl_context=context, headers=_HEADERS)


def _httpx_path(endpoint: str, verify: bool | str, context: ssl.SSLContext | None, trust_env: bool,
                timeout: float, transport: Any) -> Any:
    if load_httpx_path is not None and "rolesanywhere_hsm.httpxpath" not in sys.modules:
        load_httpx_path()
    from rolesanywhere_hsm.httpxpath import HttpxPath, httpx

    verify_arg: bool | ssl.SSLContext = verify if context is None else context
    if verify is True and not _may_use_tls(endpoint, trust_env):
        verify_arg = _unused_tls_context()  # httpx would load certifi's bundle (~25 ms) for nothing
    try:
        return HttpxPath(endpoint, verify=verify_arg, trust_env=trust_env, timeout=timeout, headers=_HEADERS,
                         transport=transport)
    except httpx.InvalidURL as exc:  # what urlsplit let through and httpx does not
        raise EndpointError(
            f"The endpoint {redact(endpoint)} is not a valid URL ({one_line(str(exc))}).",
            hint="Give a URL such as https://rolesanywhere.us-east-1.amazonaws.com.",
        ) from None
    except (OSError, ValueError) as exc:  # a bad proxy URL
        raise UsageError(
            f"Cannot set up HTTPS: {one_line(redact(str(exc)))}.",
            hint="Check --ca-bundle / AWS_CA_BUNDLE and proxy variables.",
        ) from None


def __getattr__(name: str) -> Any:
    """X509SigV4Auth is an httpx.Auth: loading it loads httpx, so only when asked for."""
    if name == "X509SigV4Auth":
        from rolesanywhere_hsm.httpxpath import X509SigV4Auth

        return X509SigV4Auth
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_DEADLINE_HINT = "Check the network, the proxy and --endpoint; or give more time with --timeout / RAH_TIMEOUT."


_phase_words = phase_words


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


def _httpx_default_context(trust_env: bool) -> ssl.SSLContext:
    """The context httpx makes for `verify=True` (httpx.create_ssl_context): SSL_CERT_FILE or
    SSL_CERT_DIR when the environment is trusted, else certifi's bundle, so that both paths
    trust the same CAs."""
    if trust_env and os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if trust_env and os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def _unverified_context() -> ssl.SSLContext:
    """httpx's context for `verify=False`: no certificate or host name check."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


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
