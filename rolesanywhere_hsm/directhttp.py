"""The standard-library path of CreateSession: one HTTP/1.1 POST over `socket` and `ssl`.

Used for a direct connection (no proxy applies: rolesanywhere_hsm.proxyenv decides, as httpx
would), so that a cold `credential-process` does not load httpx, httpcore, h11 and certifi (about
80 ms of its start, docs/performance.md). It keeps what the httpx path guarantees, and the tests
of the client run against both: the bounded name lookup and every connect, TLS handshake, write
and read cut to the time left on the call's deadline, naming the phase
(rolesanywhere_hsm.netwatch); the same TLS context (the client builds it); the answer handed
over as it arrives, so the client's 1 MiB cap and encoding check apply unchanged; a status line
and header block no larger than h11 accepts; Content-Length, chunked and close-delimited bodies.
One connection per request (`Connection: close`): a cold run sends one, and a retry opens a new
connection as it would after the failure that caused it anyway.
"""

from __future__ import annotations

import socket
import ssl
from urllib.parse import urlencode, urlsplit

from rolesanywhere_hsm.netwatch import CONNECTING, SENDING, TLS, WAITING, WATCH, is_ip_literal, limit, resolve

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

    from rolesanywhere_hsm.sigv4request import RequestSigner

__all__ = ["DirectPath", "Headers", "parse_endpoint"]

# h11's default max_incomplete_event_size: the most a status line and headers may take.
MAX_HEAD_BYTES = 16 * 1024
_READ_SIZE = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")


class DirectError(Exception):
    """Any failure of the direct path (as httpx.HTTPError is of the httpx path)."""


class DirectTimeout(DirectError):
    """The call's budget ran out (netwatch names the phase)."""


class DirectConnectError(DirectError):
    """No connection: refused, unreachable, no address, or the TLS handshake failed."""


def parse_endpoint(endpoint: str) -> tuple[str, str, int, str] | None:
    """(scheme, host, port, Host header) of an endpoint this path sends to as httpx would, or
    None for a form it leaves to httpx (user info, a path, a query, a host that is not plain
    lower-case ASCII once lowered, or an IPv6 literal: httpx normalises those its own way)."""
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "")
    if scheme not in _DEFAULT_PORTS or parts.username is not None or parts.password is not None \
            or parts.path not in ("", "/") or parts.query or parts.fragment or "#" in endpoint or "?" in endpoint:
        return None
    if not host or not set(host) <= _HOST_CHARACTERS or ".." in host or host.startswith(".") \
            or "[" in parts.netloc or parts.netloc.count(":") > 1 or parts.netloc.endswith(":"):
        return None
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return scheme, host, _DEFAULT_PORTS[scheme], host
    return scheme, host, port, f"{host}:{port}"


class Headers:
    """An answer's headers: names without case; a repeated name's values joined with ", "
    (as httpx.Headers.get gives them)."""

    __slots__ = ("_values",)

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        values: dict[str, list[str]] = {}
        for name, value in pairs:
            values.setdefault(name.lower(), []).append(value)
        self._values = values

    def get(self, name: str, default: str = "") -> str:
        found = self._values.get(name.lower())
        return default if found is None else ", ".join(found)

    def get_list(self, name: str) -> list[str]:
        return list(self._values.get(name.lower(), []))


class _Connection:
    """One socket to the endpoint, every operation cut to the time left on the call's deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.closed_by_peer = False

    def write(self, data: bytes) -> None:
        self.sock.settimeout(limit(None, SENDING, DirectTimeout))
        try:
            self.sock.sendall(data)
        except (socket.timeout, TimeoutError):
            raise DirectTimeout(f"the time budget ran out {SENDING}") from None

    def fill(self) -> bool:
        """Read once more into the buffer; False when the server has closed."""
        if self.closed_by_peer:
            return False
        self.sock.settimeout(limit(None, WAITING, DirectTimeout))
        try:
            data = self.sock.recv(_READ_SIZE)
        except (socket.timeout, TimeoutError):
            raise DirectTimeout(f"the time budget ran out {WAITING}") from None
        except OSError as exc:
            raise DirectError(str(exc) or type(exc).__name__) from None
        if not data:
            self.closed_by_peer = True
            return False
        self.buffer += data
        return True

    def take(self, size: int) -> bytes:
        taken, self.buffer = self.buffer[:size], self.buffer[size:]
        return taken

    def line(self, limit_bytes: int, what: str) -> bytes:
        """One CRLF-ended line (without it), no longer than `limit_bytes`."""
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                return self.take(end + 2)[:-2]
            if len(self.buffer) > limit_bytes:
                raise DirectError(f"{what} is too long")
            if not self.fill():
                raise DirectError(f"peer closed connection without sending complete message body: {what} cut short")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class DirectResponse:
    """The answer: status and headers read, the body streamed by `iter_raw` (framing removed,
    no content decoding, as httpx.Response.iter_raw)."""

    def __init__(self, connection: _Connection, status_code: int, headers: Headers, body: str, length: int) -> None:
        self._connection = connection
        self.status_code = status_code
        self.headers = headers
        self._body = body  # "length", "chunked", "close" or "none"
        self._length = length

    def iter_raw(self) -> Iterator[bytes]:
        connection = self._connection
        if self._body == "length":
            left = self._length
            while left > 0:
                if not connection.buffer and not connection.fill():
                    raise DirectError("peer closed connection without sending complete message body: "
                                      f"received {self._length - left} bytes, expected {self._length}")
                chunk = connection.take(left)
                left -= len(chunk)
                yield chunk
        elif self._body == "close":
            while connection.buffer or connection.fill():
                yield connection.take(len(connection.buffer))
        elif self._body == "chunked":
            yield from self._chunks()

    def _chunks(self) -> Iterator[bytes]:
        connection = self._connection
        while True:
            line = connection.line(1024, "a chunk size line")
            size_text = line.split(b";", 1)[0].strip()
            if not size_text or any(c not in b"0123456789abcdefABCDEF" for c in size_text) or len(size_text) > 16:
                raise DirectError("illegal chunk header")
            size = int(size_text, 16)
            if size == 0:
                while connection.line(MAX_HEAD_BYTES, "a trailer line"):
                    pass
                return
            left = size
            while left > 0:
                if not connection.buffer and not connection.fill():
                    raise DirectError("peer closed connection without sending complete message body: "
                                      "incomplete chunked read")
                chunk = connection.take(left)
                left -= len(chunk)
                yield chunk
            if connection.line(2, "a chunk end") != b"":
                raise DirectError("illegal chunk end")

    def close(self) -> None:
        self._connection.close()


class DirectPath:
    """Sends CreateSession to `endpoint` (a form `parse_endpoint` accepts) over `ssl_context`
    for https; its error classes, for the caller to map as it maps httpx's."""

    name = "direct"
    timeout_errors: type[Exception] = DirectTimeout
    connect_errors: type[Exception] = DirectConnectError
    http_errors: type[Exception] = DirectError
    read_timeout: type[Exception] = DirectTimeout

    def __init__(self, endpoint: str, *, ssl_context: ssl.SSLContext | None, headers: dict[str, str]) -> None:
        parsed = parse_endpoint(endpoint)
        if parsed is None:
            raise ValueError(f"not an endpoint the direct path serves: {endpoint!r}")
        self.scheme, self.host, self.port, self.host_header = parsed
        self._ssl_context = ssl_context
        self._headers = headers
        if self.scheme == "https":
            if ssl_context is None:
                raise ValueError("an https endpoint needs a TLS context")
            ssl_context.set_alpn_protocols(["http/1.1"])  # as httpcore offers it

    def send(self, path: str, params: dict[str, str], content: bytes, content_type: str,
             signing: RequestSigner, left: float) -> DirectResponse:
        """Connect, send the signed POST, read the status line and headers; the body is left
        for `iter_raw`. `left` is unused: every operation takes the time left from netwatch."""
        query = urlencode(params)
        signed = signing.headers("POST", path, {k: [v] for k, v in params.items()}, host=self.host_header,
                                 content_type=content_type, body=content)
        lines = [f"POST {path}?{query} HTTP/1.1" if query else f"POST {path} HTTP/1.1",
                 f"Host: {self.host_header}", "Accept: */*", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in self._headers.items()]
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(content)}"]
        lines += [f"{name}: {value}" for name, value in signed]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
        connection = self._connect()
        try:
            try:
                connection.write(head + content)
            except DirectTimeout:
                raise
            except OSError:
                pass  # as httpcore does: the server may have answered (and closed) already
            return self._read_head(connection)
        except BaseException:
            connection.close()
            raise

    def close(self) -> None:
        """Nothing to release: each request opened and closed its own connection."""

    def _connect(self) -> _Connection:
        host, port = self.host, self.port
        addresses = [host] if WATCH.get() is None or is_ip_literal(host) else resolve(
            host, port, DirectTimeout, DirectConnectError)
        error: Exception | None = None
        sock = None
        for address in addresses:  # as socket.create_connection does, each with what is left
            left = limit(None, CONNECTING, DirectTimeout)
            try:
                sock = socket.create_connection((address, port), timeout=left)
                break
            except (socket.timeout, TimeoutError):
                raise DirectTimeout(f"the time budget ran out {CONNECTING}") from None
            except UnicodeError:
                raise DirectConnectError(f"the host name {host!r} is not valid") from None
            except OSError as exc:
                error = DirectConnectError(str(exc))
        if sock is None:
            assert error is not None
            raise error
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.scheme == "https":
            assert self._ssl_context is not None
            try:
                sock.settimeout(limit(None, TLS, DirectTimeout))
                sock = self._ssl_context.wrap_socket(sock, server_hostname=host)
            except (socket.timeout, TimeoutError):
                sock.close()
                raise DirectTimeout(f"the time budget ran out {TLS}") from None
            except OSError as exc:  # ssl.SSLError and ssl.SSLCertVerificationError among them
                sock.close()
                raise DirectConnectError(str(exc)) from None
            except BaseException:
                sock.close()
                raise
        return _Connection(sock)

    def _read_head(self, connection: _Connection) -> DirectResponse:
        while True:  # 1xx answers are skipped, as httpx does
            while (end := _head_end(connection.buffer)) < 0:
                if len(connection.buffer) > MAX_HEAD_BYTES:
                    raise DirectError("Receive buffer too long")
                if not connection.fill():
                    if not connection.buffer:
                        raise DirectError("Server disconnected without sending a response.")
                    raise DirectError("peer closed connection without sending complete message body: "
                                      "the headers were cut short")
            if end > MAX_HEAD_BYTES:
                raise DirectError("Receive buffer too long")
            head = connection.take(end)
            status, headers = _parse_head(head)
            if not 100 <= status < 200 or status == 101:
                break
        if status == 101:
            raise DirectError("the server switched protocols, which was not asked for")
        encodings = [v.strip().lower() for value in headers.get_list("Transfer-Encoding") for v in value.split(",")]
        lengths = {v.strip() for value in headers.get_list("Content-Length") for v in value.split(",")}
        if status in (204, 304):
            return DirectResponse(connection, status, headers, "none", 0)
        if encodings:
            if encodings != ["chunked"]:
                raise DirectError("Only Transfer-Encoding: chunked is supported")
            return DirectResponse(connection, status, headers, "chunked", 0)
        if lengths:
            if len(lengths) != 1 or not next(iter(lengths)).isdigit():
                raise DirectError("bad Content-Length")
            return DirectResponse(connection, status, headers, "length", int(next(iter(lengths))))
        return DirectResponse(connection, status, headers, "close", 0)


def _head_end(buffer: bytes) -> int:
    """Where the status line and headers end (after the blank line), -1 if not yet: a line may
    end in LF alone, as h11 reads it."""
    at = buffer.find(b"\n\r\n")
    bare = buffer.find(b"\n\n")
    ends = [i + (3 if i == at else 2) for i in (at, bare) if i >= 0]
    return min(ends) if ends else -1


def _parse_head(head: bytes) -> tuple[int, Headers]:
    """Status and headers, read as h11 reads them: CRLF or LF line ends, an obsolete folded
    line joined to the one before with a space."""
    lines = [line[:-1] if line.endswith(b"\r") else line for line in head.split(b"\n")]
    while lines and not lines[-1]:
        lines.pop()
    parts = lines[0].split(b" ", 2) if lines else [b""]
    if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or len(parts[1]) != 3 \
            or not parts[1].isdigit():
        raise DirectError("illegal status line: " + repr(lines[0][:80] if lines else b""))
    unfolded: list[bytes] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            if not unfolded:
                raise DirectError("continuation line at start of headers")
            unfolded[-1] += b" " + line.lstrip(b" \t")
        else:
            unfolded.append(line)
    pairs: list[tuple[str, str]] = []
    for line in unfolded:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise DirectError("illegal header line: " + repr(line[:80]))
        pairs.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return int(parts[1]), Headers(pairs)
