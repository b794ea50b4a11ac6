"""CreateSession over HTTPS: the only module that knows HTTP, TLS, proxies, timeouts and retries.

Signing is an `httpx.Auth`, so each attempt (including every retry) is signed afresh with a new
`X-Amz-Date`, and the signer is asked for exactly one signature per attempt. A
`RolesAnywhereClient` keeps its connection pool and is meant to live as long as a credential
server does; `create_session()` is the one-shot convenience for `credential-process`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass

import httpx

from rolesanywhere_hsm import sigv4x509
from rolesanywhere_hsm.arn import SessionArns, validate_session_arns
from rolesanywhere_hsm.credentials import Credentials
from rolesanywhere_hsm.endpoints import resolve_endpoint
from rolesanywhere_hsm.errors import (
    ArnError,
    RolesAnywhereError,
    TransportError,
    UsageError,
    service_error,
)
from rolesanywhere_hsm.signers.base import Signer, SignerConfig, load_signer
from rolesanywhere_hsm.x509 import certificate_info

__all__ = [
    "DEFAULT_DURATION",
    "RetryPolicy",
    "RolesAnywhereClient",
    "X509SigV4Auth",
    "create_session",
]

log = logging.getLogger("rolesanywhere_hsm.client")

# shared/PROTOCOL.md section 2.
DEFAULT_DURATION = 3600
MIN_DURATION, MAX_DURATION = 900, 43200
SESSIONS_PATH = "/sessions"
# Retried answers (section 5): throttling and server faults; never other 4xx.
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class RetryPolicy:
    """Full-jitter exponential backoff: attempt n waits uniform(0, min(cap, base * 2**n))."""

    attempts: int = 3
    base_delay: float = 0.25
    max_delay: float = 5.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


def _check_duration(duration_seconds: int) -> None:
    if not MIN_DURATION <= duration_seconds <= MAX_DURATION:
        raise UsageError(
            f"--session-duration {duration_seconds} is out of range.",
            hint=f"Use {MIN_DURATION}..{MAX_DURATION} seconds.",
        )


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


def _error_from_response(response: httpx.Response) -> RolesAnywhereError:
    error_type = response.headers.get("X-Amzn-ErrorType", "").split(":", 1)[0]
    try:
        body = response.json()
        message = body.get("message") or body.get("Message") or ""
    except (json.JSONDecodeError, ValueError, AttributeError):
        message = ""
    if not error_type and not message:
        return TransportError(
            f"The endpoint answered HTTP {response.status_code} without a Roles Anywhere error.",
            hint="Check --endpoint and any proxy between you and the service.",
        )
    return service_error(error_type, response.status_code, message or f"HTTP {response.status_code}")


class RolesAnywhereClient:
    """A connection to one Roles Anywhere endpoint, reusable across many CreateSession calls."""

    def __init__(
        self,
        region: str,
        *,
        endpoint: str | None = None,
        verify: bool | str = True,
        trust_env: bool = True,
        timeout: httpx.Timeout | float = httpx.Timeout(30.0, connect=10.0),
        retry: RetryPolicy = RetryPolicy(),
        clock: Clock = _utcnow,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.region = region
        self.endpoint = resolve_endpoint(region, endpoint)
        self._retry = retry
        self._clock = clock
        self._sleep = time.sleep
        try:
            if isinstance(verify, str):  # a CA bundle file: httpx wants an SSL context now
                import ssl

                verify_arg: bool | ssl.SSLContext = ssl.create_default_context(cafile=verify)
            else:
                verify_arg = verify
            self._http = httpx.Client(
                base_url=self.endpoint,
                verify=verify_arg,
                trust_env=trust_env,
                timeout=timeout,
                transport=transport,
                headers={"User-Agent": "rolesanywhere-hsm/0.1"},
            )
        except (OSError, ValueError) as exc:  # an unreadable CA bundle, a bad proxy URL
            raise UsageError(
                f"Cannot set up HTTPS: {exc}.", hint="Check --ca-bundle / AWS_CA_BUNDLE and proxy variables."
            ) from None

    def create_session(
        self,
        signer: Signer,
        arns: SessionArns,
        *,
        duration_seconds: int = DEFAULT_DURATION,
        role_session_name: str | None = None,
    ) -> Credentials:
        """One CreateSession call (with retries); one signature per attempt."""
        if arns.region != self.region:
            raise ArnError(
                f"The trust anchor is in {arns.region} but the client signs for {self.region}.",
                hint="Drop --region or make it match the trust anchor ARN.",
            )
        _check_duration(duration_seconds)
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
        for attempt in range(self._retry.attempts):
            if attempt:
                delay = self._retry.delay(attempt)
                log.debug("retrying in %.2f s (attempt %d of %d)", delay, attempt + 1, self._retry.attempts)
                self._sleep(delay)
            request = self._http.build_request(
                "POST",
                SESSIONS_PATH,
                params=params,
                content=content,
                headers={"Content-Type": "application/json"},
            )
            try:
                response = self._send(request, auth)
            except TransportError as exc:
                if not getattr(exc, "retryable", True):
                    raise
                last_error = exc
                continue
            log.debug("CreateSession answered HTTP %d", response.status_code)
            if response.status_code in (200, 201):
                try:
                    payload = response.json()
                except ValueError:
                    raise TransportError(
                        "The CreateSession answer is not JSON.", hint="Check --endpoint."
                    ) from None
                return Credentials.from_create_session(payload)
            last_error = _error_from_response(response)
            if response.status_code not in _RETRY_STATUSES:
                raise last_error
        assert last_error is not None
        raise last_error

    def _send(self, request: httpx.Request, auth: httpx.Auth) -> httpx.Response:
        """Send with errors mapped to ours; the response body is read before returning."""
        try:
            return self._http.send(request, auth=auth)
        except httpx.ConnectError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "SSL" in str(exc):
                tls_error = TransportError(
                    f"TLS verification of {self.endpoint} failed: {exc}.",
                    hint="Pass --ca-bundle (or AWS_CA_BUNDLE) for a private CA.",
                )
                tls_error.retryable = False  # the same certificate will fail the same way
                raise tls_error from exc
            raise TransportError(
                f"Cannot connect to {self.endpoint}: {exc}.",
                hint="Check the network, the proxy settings and --endpoint.",
            ) from exc
        except httpx.TimeoutException as exc:
            raise TransportError(
                f"{self.endpoint} did not answer in time ({type(exc).__name__}).",
                hint="Check the network and proxy; the call was retried.",
            ) from exc
        except httpx.HTTPError as exc:
            raise TransportError(f"HTTP error talking to {self.endpoint}: {exc}.") from exc

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RolesAnywhereClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_session(
    signer: Signer | SignerConfig,
    *,
    trust_anchor_arn: str,
    profile_arn: str,
    role_arn: str,
    region: str | None = None,
    endpoint: str | None = None,
    duration_seconds: int = DEFAULT_DURATION,
    role_session_name: str | None = None,
    verify: bool | str = True,
    trust_env: bool = True,
    retry: RetryPolicy = RetryPolicy(),
) -> Credentials:
    """Get credentials once: a `CredentialSession` used for one fetch and closed.

    Every argument is checked (by `CredentialSpec`) before the key store is opened, so a typo
    in an ARN never costs a PIN entry. Given an open Signer, it is used and left open.
    """
    from rolesanywhere_hsm.session import CredentialSession, CredentialSpec

    lent = None if isinstance(signer, SignerConfig) else signer
    config = signer if isinstance(signer, SignerConfig) else None
    spec = CredentialSpec(
        certificate=config.certificate if config else "(an open signer)",
        private_key=config.private_key if config else None,
        intermediates=config.intermediates if config else None,
        pkcs11_lib=config.pkcs11_lib if config else None,
        reuse_pin=config.reuse_pin if config else False,
        trust_anchor_arn=trust_anchor_arn,
        profile_arn=profile_arn,
        role_arn=role_arn,
        region=region,
        endpoint=endpoint,
        duration_seconds=duration_seconds,
        role_session_name=role_session_name,
        verify=verify,
        trust_env=trust_env,
    )
    with CredentialSession(
        spec,
        secret_callback=config.secret_callback if config else None,
        pkcs8_password=config.pkcs8_password if config else None,
        signer=lent,
        retry=retry,
    ) as session:
        return session.fetch()
