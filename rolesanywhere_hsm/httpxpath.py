"""The httpx path of CreateSession: used when a proxy applies (and whenever asked for).

httpx brings proxies from the environment (HTTP, HTTPS and SOCKS, with NO_PROXY) and a
connection pool a long-lived credential server reuses. Signing is an `httpx.Auth`
(X509SigV4Auth, over rolesanywhere_hsm.sigv4request), so each attempt (including every retry)
is signed afresh. The call's time budget is enforced one level down: a network backend for
httpcore (`_DeadlineBackend`) cuts every connect, TLS handshake, write and read to the time left
(rolesanywhere_hsm.netwatch). rolesanywhere_hsm.client chooses the path and maps its errors.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Callable, Generator
from typing import Any

import httpcore
import httpx

from rolesanywhere_hsm.netwatch import CONNECTING, SENDING, TLS, WAITING, WATCH, is_ip_literal, limit, resolve
from rolesanywhere_hsm.sigv4request import RequestSigner, _utcnow

TYPE_CHECKING = False
if TYPE_CHECKING:
    from rolesanywhere_hsm.signers.base import Signer

__all__ = ["HttpxPath", "X509SigV4Auth"]


class X509SigV4Auth(httpx.Auth):
    """Adds the X.509 headers and the Authorization header to a CreateSession request."""

    requires_request_body = True

    def __init__(self, signer: Signer | RequestSigner, region: str,
                 clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self._signing = signer if isinstance(signer, RequestSigner) else RequestSigner(signer, region, clock)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        query: dict[str, list[str]] = {}
        for name, value in request.url.params.multi_items():
            query.setdefault(name, []).append(value)
        for name, value in self._signing.headers(
            request.method, request.url.path, query, host=request.headers["Host"],
            content_type=request.headers["Content-Type"], body=request.content,
        ):
            request.headers[name] = value
        yield request


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, limit(timeout, WAITING, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, limit(timeout, SENDING, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        left = limit(timeout, TLS, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, left))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        addresses = [host] if WATCH.get() is None or is_ip_literal(host) else resolve(
            host, port, httpcore.ConnectTimeout, httpcore.ConnectError)
        error: Exception | None = None
        for address in addresses:  # as socket.create_connection does, each with what is left
            left = limit(timeout, CONNECTING, httpcore.ConnectTimeout)
            try:
                return _DeadlineStream(self._inner.connect_tcp(address, port, left, local_address, socket_options))
            except httpcore.ConnectError as exc:
                error = exc
            except UnicodeError:  # the resolver's IDNA step: an empty or overlong label
                raise httpcore.ConnectError(f"the host name {host!r} is not valid") from None
        assert error is not None
        raise error

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        left = limit(timeout, CONNECTING, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, left, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


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


class HttpxPath:
    """One pooled httpx client for an endpoint; the errors it raises, for the caller to map."""

    name = "httpx"
    timeout_errors: type[Exception] = httpx.TimeoutException
    connect_errors: type[Exception] = httpx.ConnectError
    http_errors: type[Exception] = httpx.HTTPError
    read_timeout: type[Exception] = httpx.ReadTimeout
    invalid_url: type[Exception] = httpx.InvalidURL

    def __init__(self, endpoint: str, *, verify: bool | ssl.SSLContext, trust_env: bool, timeout: float,
                 headers: dict[str, str], transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=endpoint, verify=verify, trust_env=trust_env, timeout=timeout,
                                  transport=transport, headers=headers)
        _install_deadline_backend(self._http)

    def send(self, path: str, params: dict[str, str], content: bytes, content_type: str,
             signing: RequestSigner, left: float) -> httpx.Response:
        """Send the POST and return the answer with its body still unread (`iter_raw`)."""
        request = self._http.build_request("POST", path, params=params, content=content,
                                           headers={"Content-Type": content_type}, timeout=httpx.Timeout(left))
        return self._http.send(request, auth=X509SigV4Auth(signing, ""), stream=True)

    def close(self) -> None:
        self._http.close()
