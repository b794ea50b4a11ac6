"""The emulator's HTTP front: stdlib `http.server`, so the emulator adds no dependency.

It only turns bytes into a `ReceivedRequest` (keeping headers as sent, de-chunking bodies) and
an `HttpResponse` back into bytes; what to answer is decided by `service.Emulator.handle`.
TLS is optional and its handshake runs in the worker thread, so one slow client cannot stall
the accept loop.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rolesanywhere_hsm.emulator.verify import ReceivedRequest

__all__ = ["HttpResponse", "RequestTooLarge", "make_server"]

log = logging.getLogger("rolesanywhere_hsm.emulator")

# CreateSession bodies are a few hundred bytes; the cap only stops a runaway client.
MAX_BODY = 1 << 20
_SOCKET_TIMEOUT = 30.0


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


class RequestTooLarge(ValueError):
    pass


# The application: a request in, a response out, or None to drop the connection unanswered.
Application = Callable[[ReceivedRequest, tuple[str, int]], "HttpResponse | None"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as AWS endpoints do
    # Headers and body leave in two writes; with Nagle on, the body waits for the client's
    # delayed ACK of the headers: 40 ms on every answer over a kept-alive connection.
    disable_nagle_algorithm = True
    server: _Server
    timeout = _SOCKET_TIMEOUT

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_line = self.rfile.readline(1024)
            if not size_line:
                raise ValueError("connection closed inside a chunked body")
            size = int(size_line.split(b";", 1)[0].strip() or b"x", 16)
            if size == 0:
                break
            if len(body) + size > MAX_BODY:
                raise RequestTooLarge(f"body larger than {MAX_BODY} bytes")
            body += self.rfile.read(size)
            if self.rfile.read(2) != b"\r\n":
                raise ValueError("chunk not followed by CRLF")
        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
            pass  # trailers: nothing we need, and they are not signed headers
        return bytes(body)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        if length > MAX_BODY:
            raise RequestTooLarge(f"body larger than {MAX_BODY} bytes")
        return self.rfile.read(length)

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except RequestTooLarge as exc:
            self._send(HttpResponse(413, b'{"message":"Request entity too large"}',
                                    [("Content-Type", "application/json")]), close=True)
            log.info("refused body: %s", exc)
            return
        except ValueError as exc:
            self._send(HttpResponse(400, b'{"message":"Malformed request body"}',
                                    [("Content-Type", "application/json")]), close=True)
            log.info("malformed body: %s", exc)
            return
        target = self.path
        if not target.startswith("/"):  # absolute-form, as sent to a proxy
            parts = urlsplit(target)
            target = parts.path + ("?" + parts.query if parts.query else "")
        path, _, query = target.partition("?")
        request = ReceivedRequest(self.command, path, query, list(self.headers.items()), body)
        response = self.server.application(request, self.client_address)
        if response is None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._send(response)

    def _send(self, response: HttpResponse, close: bool = False) -> None:
        if any(name.lower() == "date" for name, _ in response.headers):
            # The application's clock decides the Date (the emulator's may be moved).
            self.log_request(response.status)
            self.send_response_only(response.status)
            self.send_header("Server", self.version_string())
        else:
            self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(response.body)

    do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Without this, a test that restarts on the same port meets TIME_WAIT.
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], application: Application,
                 tls: ssl.SSLContext | None) -> None:
        self.application = application
        self.tls = tls
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is not None:
            request.settimeout(_SOCKET_TIMEOUT)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                log.info("TLS handshake with %s failed: %s", client_address, exc)
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-request is not worth a traceback on stderr.
        log.debug("error while serving %s", client_address, exc_info=True)


def make_server(
    application: Application,
    host: str = "127.0.0.1",
    port: int = 0,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
) -> _Server:
    """Bind (port 0: any free port) but do not serve yet; call serve_forever() on it."""
    tls = None
    if tls_cert is not None:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2  # docs/protocol.md section 1
        tls.load_cert_chain(str(tls_cert), str(tls_key) if tls_key else None)
    return _Server((host, port), application, tls)
