"""The emulator's HTTP front: the shared layer (`rolesanywhere_hsm.httpserver`) in front of
`service.Emulator.handle`.

The layer turns bytes into a wire-only request and refuses what is malformed or too large
(400, 413, 414, 431) before the emulator sees it; this module only adapts that request to the
emulator's `ReceivedRequest` (headers exactly as sent: whether a repeated header is acceptable
is the verifier's rule) and runs the application in a thread pool, because verifying a
signature is CPU work that must not hold the event loop. TLS handshakes run in the event loop
with a timeout, so one slow client cannot stall the others.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rolesanywhere_hsm.emulator.verify import ReceivedRequest
from rolesanywhere_hsm.httpserver import HttpServer, Limits, Request, Response, tls_context

__all__ = ["HttpResponse", "make_server"]

# The emulator's answers are the layer's responses (the name is kept for its callers).
HttpResponse = Response

# The application: a request and the client's address in, a response out, or None to drop the
# connection unanswered.
Application = Callable[[ReceivedRequest, tuple[str, int]], "Response | None"]


def make_server(
    application: Application,
    host: str = "127.0.0.1",
    port: int = 0,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
    limits: Limits | None = None,
) -> HttpServer:
    """Bind (port 0: any free port) but do not serve yet; call start_in_thread() on it."""
    tls = tls_context(tls_cert, tls_key) if tls_cert is not None else None

    def app(request: Request) -> Response | None:
        received = ReceivedRequest(request.method, request.path, request.query, request.headers, request.body)
        return application(received, request.client)

    return HttpServer(app, host=host, port=port, tls=tls, limits=limits, threaded=True).bind()
