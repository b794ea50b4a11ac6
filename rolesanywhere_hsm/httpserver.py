"""The one small HTTP/1.1 server layer that the emulator and `serve` share.

asyncio on the standard library, written as a `Protocol` (not streams: a stream reader per
connection costs about half the throughput), because `serve` answers credential GETs from memory
and must stay fast with many keep-alive clients. What it does and why:

- a wire-only `Request` (method, raw target, raw path and query, headers as sent, in order,
  repeated ones kept, body de-chunked): what a repeated header *means* is the application's rule
  (the emulator's verifier calls it an invalid signature; this layer does not judge);
- keep-alive (HTTP/1.1 default, `Connection: close` honoured), TCP_NODELAY (headers and body leave
  in one write anyway, but a pipelined client must not wait for a delayed ACK), an optional IP TTL
  (`hop_limit`, as the official helper sets it so an answer cannot travel beyond a host);
- limits against hostile or broken clients: request line (414), header section and count (431),
  body (413), malformed framing (400: bad chunk sizes, negative or repeated Content-Length,
  Content-Length with Transfer-Encoding, obs-fold, control characters), a deadline for a whole
  request once its first byte arrived (408: a client that drips a byte at a time cannot hold a
  connection for longer), an idle timeout between keep-alive requests, a bound on connections
  and on unread pipelined input;
- the bound on connections also stays below the process's limit on open files (RLIMIT_NOFILE)
  with a reserve for what the rest of the process opens (a token, an HTTPS client): a full
  server must never starve its own refreshes. At the bound, a new connection takes the place of
  the least recently active one not being answered, first among those that never got an
  `authorized` answer: so whoever holds connections with keep-alive health checks cannot keep
  an SDK out (a kept-alive client finds its idle connection closed and opens another, as it
  would after the idle timeout); a connection still being set up (accepted, its transport or TLS
  handshake not made yet) is a candidate too, as silent as one can be, so a burst of newcomers
  cannot fill the bound with half-made connections and turn the next ones away; only when every
  connection is being answered does the new one get 503 and a close. A wake-up evicts at most
  EVICTIONS_PER_WAKEUP connections before the loop closes their descriptors, so a flood stays
  within the reserve. Out of descriptors anyway (another part of
  the process, or the system's limit), accepting pauses for a moment and one line a minute is
  logged, instead of asyncio's traceback per failed accept;
- TLS optional, its handshake run by asyncio with a timeout, so a slow handshake stalls no one;
  key files named when they cannot be loaded, and a pass phrase is never prompted for;
- applications may be plain functions (called inline: `serve`'s, which only read memory), plain
  functions run in a thread pool (`threaded=True`: the emulator verifies signatures), or
  coroutines. An application returns a `Response`, or None to drop the connection unanswered.
- header values an application returns lose CR, LF and other control characters here, so no
  value echoed from a request can split an answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import inspect
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import ssl

__all__ = [
    "AccessLog",
    "Application",
    "HttpServer",
    "Limits",
    "Request",
    "Response",
    "clean_header_value",
    "tls_context",
]

log = logging.getLogger("rolesanywhere_hsm.httpserver")


@dataclass(frozen=True, slots=True)
class Request:
    """A request as it came off the wire; nothing decoded beyond Latin-1 header text."""

    method: str
    target: str  # as sent (origin-form or absolute-form)
    path: str  # raw, still percent-encoded: a signature is computed over it
    query: str  # raw, without the "?"
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: tuple[tuple[str, str], ...]  # as sent, in order, repeated ones kept
    body: bytes
    client: tuple[str, int]
    # The header names in lowercase, parallel to `headers` (the parser has them anyway).
    names: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def _names(self) -> tuple[str, ...]:
        return self.names or tuple(key.lower() for key, _ in self.headers)

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        names, name = self._names(), name.lower()
        return self.headers[names.index(name)][1] if name in names else None

    def single_header(self, name: str) -> str | None:
        """The value of header `name` (case-insensitive) when it was sent exactly once, else None:
        a credential check wants one token, never a choice among several."""
        names, name = self._names(), name.lower()
        return self.headers[names.index(name)][1] if names.count(name) == 1 else None

    def header_values(self, name: str) -> list[str]:
        """Every value of header `name`, in the order sent."""
        name = name.lower()
        return [header[1] for key, header in zip(self._names(), self.headers) if key == name]


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: Sequence[tuple[str, str]] = ()
    close: bool = False  # close the connection after this answer
    # The client proved it may have what it asked for (it sent the right token): at the
    # connection bound, its connection is given up for a newcomer only after every other one.
    authorized: bool = False


Application = Callable[[Request], Union["Response | None", Awaitable["Response | None"]]]
# (client address, method, target, status, body bytes, seconds) after every answer; method and
# target are "-" when the request could not be parsed. If it has a `flush()`, the server calls
# it on every sweep (a quarter second) and when it closes, so it may batch its writes.
AccessLog = Callable[[tuple[str, int], str, str, int, int, float], None]


@dataclass(frozen=True)
class Limits:
    """Bounds on what one client may send and hold. Defaults suit both servers here."""

    max_request_line: int = 8192  # 414 beyond
    max_header_bytes: int = 16384  # whole header section (and trailers); 431 beyond
    max_headers: int = 100  # 431 beyond
    max_body: int = 1 << 20  # 413 beyond (CreateSession bodies are a few hundred bytes)
    request_timeout: float = 10.0  # first byte to last byte of one request; 408 after
    keep_alive_timeout: float = 30.0  # idle between requests; closed silently after
    tls_handshake_timeout: float = 10.0
    max_connections: int = 1024  # at most; fewer when RLIMIT_NOFILE is lower (see RESERVED_DESCRIPTORS)
    max_pipelined: int = 256 * 1024  # unread input buffered while an answer is pending


# Descriptors kept free for the rest of the process when the connection bound is set from
# RLIMIT_NOFILE: the token's module (pcscd, a TPM, p11-kit sockets), the HTTPS client's
# connections on each refresh, log files, DNS, a connection accepted only to be turned away.
RESERVED_DESCRIPTORS = 64
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_PAUSE = 0.25  # seconds without accepting after the process or system ran out of descriptors
TURN_AWAY_LINGER = 0.5  # seconds a turned-away socket stays open after its 503 (see _turn_away)
TURN_AWAY_LINGERING = 16  # at most this many at once (they come out of the descriptor reserve); more close at once
# An evicted connection's descriptor is closed by the loop's next turn, not at once: a wake-up
# that evicted this many accepts no more until then (with TURN_AWAY_LINGERING, well within the reserve).
EVICTIONS_PER_WAKEUP = 16
OUT_OF_DESCRIPTORS_LOG_INTERVAL = 60.0


def connection_budget(wanted: int, reserve: int = RESERVED_DESCRIPTORS) -> int:
    """How many connections may be open at once: `wanted`, or fewer so that the descriptors
    open now, the connections and `reserve` stay within the soft RLIMIT_NOFILE. At least 1."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:  # no /proc: a guess at what a Python process holds at start
        in_use = 32
    return max(1, min(wanted, soft - in_use - reserve))


_REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
    414: "URI Too Long", 417: "Expectation Failed", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}
# RFC 9110 token characters: what a method and a header name may hold.
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_CONTROL = {c: None for c in (*range(0x00, 0x20), 0x7F)}


def clean_header_value(value: str) -> str:
    """`value` without CR, LF or other control characters (tab becomes a space)."""
    if value.isprintable():
        return value
    return value.replace("\t", " ").translate(_CONTROL)


def tls_context(cert_file: str | Path, key_file: str | Path | None = None) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2+), or a UsageError naming the file that cannot be loaded.

    An encrypted key is refused rather than prompted for: a server runs unattended, and a
    prompt on a terminal nobody watches would hang it.
    """
    import ssl

    from rolesanywhere_hsm.errors import UsageError
    from rolesanywhere_hsm.redact import redact

    def no_pass_phrase() -> bytes:
        raise UsageError(
            f"the TLS key {redact(str(key_file or cert_file))} is encrypted; "
            "give an unencrypted key (servers never prompt for a pass phrase)"
        )

    for path in (cert_file, key_file):
        if path is not None and not Path(path).is_file():
            raise UsageError(f"cannot read the TLS file {redact(str(path))}: no such regular file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None, password=no_pass_phrase)
    except (ssl.SSLError, OSError, ValueError) as exc:
        named = f"{cert_file}" + (f" with key {key_file}" if key_file else "")
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"cannot load the TLS certificate {redact(named)}: {reason}") from None
    return context


class _Refusal(Exception):
    """A request the layer answers itself (status) and then closes the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_date_cache: list[Any] = [0, b""]


def _date_header() -> bytes:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
    return _date_cache[1]  # type: ignore[no-any-return]


_header_cache: dict[tuple[str, str], bytes] = {}


def _header_line(header: tuple[str, str]) -> bytes:
    line = _header_cache.get(header)
    if line is None:
        name, value = header
        line = f"{clean_header_value(name)}: {clean_header_value(value)}\r\n".encode("latin-1", "replace")
        if len(_header_cache) < 512:  # constant headers repeat; per-request ones must not pile up
            _header_cache[header] = line
    return line


# id(response) -> (response, status line, whether to add Date, header lines and Content-Length):
# applications hand out the same Response object for every credential GET of a credential set,
# so its bytes are built once. The response is held so that its id cannot be reused meanwhile.
_wire_cache: dict[int, tuple[Response, bytes, bool, bytes]] = {}


def _wire_parts(response: Response) -> tuple[Response, bytes, bool, bytes]:
    cached = _wire_cache.get(id(response))
    if cached is None or cached[0] is not response:
        status = response.status
        cached = (
            response,
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, "Unknown").encode()),
            # else the application keeps its own clock (the emulator's)
            not any(name.lower() == "date" for name, _ in response.headers),
            b"".join(map(_header_line, response.headers)) + b"Content-Length: %d\r\n" % len(response.body),
        )
        if len(_wire_cache) >= 64:
            _wire_cache.clear()
        _wire_cache[id(response)] = cached
    return cached


def _serialize(response: Response, close: bool, head_only: bool = False, http10: bool = False) -> bytes:
    _, status_line, add_date, fields = _wire_parts(response)
    parts = [status_line, _date_header(), fields] if add_date else [status_line, fields]
    if close:
        parts.append(b"Connection: close\r\n")
    elif http10:  # an HTTP/1.0 client keeps the connection only when told so
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(response.body)
    return b"".join(parts)


_INTERNAL_ERROR = Response(500, b'{"message":"Internal error"}', [("Content-Type", "application/json")])


def _refusal_response(status: int, message: str) -> bytes:
    body = b'{"message":"%s"}' % message.encode("ascii", "replace")
    return _serialize(Response(status, body, [("Content-Type", "application/json")]), close=True)


def _split_target(target: str) -> tuple[str, str]:
    if target.startswith("/"):
        path, _, query = target.partition("?")
        return path, query
    if "://" in target:  # absolute-form, as sent to a proxy
        parts = urlsplit(target)
        return parts.path or "/", parts.query
    if target == "*":
        return "*", ""
    raise _Refusal(400, "Malformed request target")


# Control characters other than tab, CR and LF (those are checked by counting CRLFs).
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _parse_head(head: bytes, limits: Limits) -> tuple[str, str, str, list[tuple[str, str]], list[str]]:
    """(method, target, version, headers, lowercase names) from the bytes before the blank line."""
    crlf = head.count(b"\r\n")
    if _CONTROL_BYTES.search(head) or head.count(b"\r") != crlf or head.count(b"\n") != crlf:
        raise _Refusal(400, "Control character in the request head")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise _Refusal(400, "Malformed request line")
    method, target, version = parts
    if not method or not _TCHAR.issuperset(method):
        raise _Refusal(400, "Malformed method")
    if version != b"HTTP/1.1" and version != b"HTTP/1.0":
        raise _Refusal(400, "Unsupported HTTP version")
    if not target or b"\t" in target:
        raise _Refusal(400, "Malformed request target")
    if len(lines) - 1 > limits.max_headers:
        raise _Refusal(431, "Too many header fields")
    headers: list[tuple[str, str]] = []
    names: list[str] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or not _TCHAR.issuperset(name):
            # Also obs-fold (a line starting with whitespace) and "Name : value".
            raise _Refusal(400, "Malformed header line")
        text = name.decode("ascii")
        headers.append((text, value.strip(b" \t").decode("latin-1")))
        names.append(text.lower())
    return method.decode("ascii"), target.decode("latin-1"), version.decode("ascii"), headers, names


# What a request head says, parsed once per distinct head: (method, target, version, headers,
# lowercase names, body length (None: chunked), path, query, keep-alive asked for).
_ParsedHead = tuple[str, str, str, tuple[tuple[str, str], ...], tuple[str, ...], "int | None", str, str, bool]
_HEAD_CACHE_SIZE = 256  # distinct heads remembered per server (cleared when full)
_HEAD_CACHE_MAX_BYTES = 2048  # longer heads are parsed every time


def _parse_request_head(head: bytes, limits: Limits) -> _ParsedHead:
    """Everything the layer needs from a head, as immutable values: a keep-alive client sends
    the same head (same path, same token) again and again, so this runs once per distinct head
    and a dictionary answers the rest (parsing was the largest part of a credential GET)."""
    method, target, version, headers, names = _parse_head(head, limits)
    length = _body_framing(headers, names, limits.max_body)
    path, query = _split_target(target)
    if "connection" not in names:
        keep_alive = version == "HTTP/1.1"
    else:
        tokens = {t.strip().lower() for k, (_, v) in zip(names, headers) if k == "connection" for t in v.split(",")}
        keep_alive = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
    return method, target, version, tuple(headers), tuple(names), length, path, query, keep_alive


def _body_framing(headers: list[tuple[str, str]], names: list[str], max_body: int) -> int | None:
    """Content length to read, or None for a chunked body."""
    if "transfer-encoding" not in names and "content-length" not in names:
        return 0
    encodings = [v for k, (_, v) in zip(names, headers) if k == "transfer-encoding"]
    lengths = [v for k, (_, v) in zip(names, headers) if k == "content-length"]
    if encodings:
        if lengths:
            raise _Refusal(400, "Both Content-Length and Transfer-Encoding")  # smuggling
        codings = [c.strip().lower() for v in encodings for c in v.split(",")]
        if codings != ["chunked"]:
            raise _Refusal(400, "Unsupported Transfer-Encoding")
        return None
    if not lengths:
        return 0
    values = {v.strip() for item in lengths for v in item.split(",")}
    if len(values) != 1:
        raise _Refusal(400, "Conflicting Content-Length")
    value = values.pop()
    if not value.isdigit() or not value.isascii():
        raise _Refusal(400, "Malformed Content-Length")
    if len(value) > 18 or int(value) > max_body:
        raise _Refusal(413, "Request body too large")
    return int(value)


# States of a connection's parser.
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _TRAILERS, _BUSY, _CLOSED = range(7)


class _Connection(asyncio.Protocol):
    """One client connection: a parser fed by data_received, answering one request at a time."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] = ("-", 0)
        self.buffer = bytearray()
        self.state = _HEAD
        self.deadline = 0.0  # loop time after which the sweeper acts; 0: none
        self.in_request = False  # first byte of a request seen (408 on timeout, else silent close)
        self.writing_paused = False
        self.reading_paused = False
        self.processing = False
        self.authorized = False  # an answer to this client was `authorized`
        self.active = time.monotonic()  # when the last request started or was answered (or it was accepted)
        self.adopted = False  # asyncio made (or is making) a transport of its socket: see HttpServer._evict
        # (request bytes, Request, Response, [Date line, answer bytes]) of the last request that
        # came whole in one read and could be answered again the same way: see _replay.
        self.known: tuple[bytes, Request, Response, list[bytes]] | None = None
        self.raw: bytes | None = None  # the current request's bytes, when it came whole in one read
        self.request: Request | None = None  # the Request made from `raw`
        self._reset_request()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        server = self.server
        server._setting_up.pop(self, None)
        if self.state == _CLOSED:  # evicted while being set up
            transport.abort()
            return
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else ("-", 0)
        server._connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if server.hop_limit is not None:
                    if sock.family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, server.hop_limit)
                    else:
                        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, server.hop_limit)
            except OSError:  # the peer may already be gone
                pass
        self.deadline = time.monotonic() + self.limits.keep_alive_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = _CLOSED
        self.server._connections.discard(self)
        if self.task is not None:
            self.task.cancel()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.state != _BUSY and self.state != _CLOSED:
            self._process()

    def data_received(self, data: bytes) -> None:
        if self.state == _HEAD and not self.buffer and not self.writing_paused and data[-4:] == b"\r\n\r\n":
            # The keep-alive client's next request, whole, in one read, a head seen before: no
            # buffer, no parsing (a head never holds a blank line, so pipelined requests miss).
            known = self.known
            if known is not None and known[0] == data:
                self._replay(known)
                return
            parsed = self.server._heads.get(data[:-4])
            if parsed is not None and parsed[5] == 0:
                self.raw = data
                self.in_request = True
                self.started = time.perf_counter()
                self.active = time.monotonic()
                self.deadline = self.active + self.limits.request_timeout
                (self.method, self.target, self.version, self.headers, self.names, _, self.path, self.query,
                 self.keep_alive) = parsed
                self._dispatch()
                return
        if self.state == _CLOSED:
            return
        self.buffer += data
        if not self.in_request:
            self.in_request = True
            self.started = time.perf_counter()
            self.active = time.monotonic()
            self.deadline = self.active + self.limits.request_timeout
        if self.state == _BUSY or self.writing_paused:
            if len(self.buffer) > self.limits.max_pipelined and self.transport is not None:
                self.transport.pause_reading()
                self.reading_paused = True
            return
        self._process()

    def eof_received(self) -> bool:
        # A client that half-closes after a partial request gets a 400 (it may still read).
        if self.state not in (_BUSY, _CLOSED) and (self.buffer or self.state != _HEAD):
            self._refuse(400, "Incomplete request")
        elif self.state != _BUSY:
            self._close()
        else:
            self.eof_pending = True
            return True  # answer the request in progress, then close
        return False

    # -- parsing --------------------------------------------------------------------------------

    def _reset_request(self) -> None:
        self.method = self.target = self.version = self.path = self.query = ""
        self.headers: tuple[tuple[str, str], ...] = ()
        self.names: tuple[str, ...] = ()
        self.keep_alive = False
        self.body = bytearray()
        self.remaining = 0
        self.task: asyncio.Future[Any] | None = None
        self.eof_pending = False
        self.started = 0.0

    def _process(self) -> None:
        """Consume as much of the buffer as makes progress; dispatch each complete request."""
        if self.processing:  # an answer given from inside this loop: the loop goes on
            return
        self.processing = True
        try:
            while self.state not in (_BUSY, _CLOSED) and not self.writing_paused:
                if not self._step():
                    break
        except _Refusal as refusal:
            self._refuse(refusal.status, str(refusal))
        finally:
            self.processing = False

    def _step(self) -> bool:
        """Advance the parser once; False when more input is needed."""
        buffer, limits = self.buffer, self.limits
        if self.state == _HEAD:
            while buffer[:2] == b"\r\n":  # RFC 9112 2.2: ignore empty lines before a request
                del buffer[:2]
            end = buffer.find(b"\r\n\r\n")
            line_end = buffer.find(b"\r\n")
            if (line_end < 0 and len(buffer) > limits.max_request_line) or line_end > limits.max_request_line:
                raise _Refusal(414, "Request line too long")
            if end < 0:
                if line_end >= 0 and len(buffer) - line_end > limits.max_header_bytes:
                    raise _Refusal(431, "Request header fields too large")
                return False
            if end - line_end > limits.max_header_bytes:
                raise _Refusal(431, "Request header fields too large")
            head = bytes(buffer[:end])
            del buffer[:end + 4]
            heads = self.server._heads
            parsed = heads.get(head)
            if parsed is None:
                parsed = _parse_request_head(head, limits)
                if len(head) <= _HEAD_CACHE_MAX_BYTES:
                    if len(heads) >= _HEAD_CACHE_SIZE:
                        heads.clear()
                    heads[head] = parsed
            (self.method, self.target, self.version, self.headers, self.names, length, self.path, self.query,
             self.keep_alive) = parsed
            if length is None or length > 0:
                self._maybe_continue()
            if length is None:
                self.state = _CHUNK_SIZE
            elif length > 0:
                self.remaining = length
                self.state = _BODY
            else:
                self._dispatch()
            return True
        if self.state == _BODY:
            if not buffer:
                return False
            take = min(self.remaining, len(buffer))
            self.body += buffer[:take]
            del buffer[:take]
            self.remaining -= take
            if self.remaining == 0:
                self._dispatch()
                return True
            return False
        if self.state == _CHUNK_SIZE:
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                if len(buffer) > 1024:
                    raise _Refusal(400, "Malformed chunk size")
                return False
            size_text = bytes(buffer[:line_end]).split(b";", 1)[0].strip(b" \t")
            del buffer[:line_end + 2]
            # Hex digits only: no sign (a negative size), no "0x", no digits beyond 16.
            if not size_text or len(size_text) > 16 or not _HEX.issuperset(size_text):
                raise _Refusal(400, "Malformed chunk size")
            size = int(size_text, 16)
            if size > limits.max_body:
                raise _Refusal(400, "Chunk size too large")
            if len(self.body) + size > limits.max_body:
                raise _Refusal(413, "Request body too large")
            if size == 0:
                self.state = _TRAILERS
                self.remaining = 0
            else:
                self.remaining = size
                self.state = _CHUNK_DATA
            return True
        if self.state == _CHUNK_DATA:
            need = self.remaining + 2
            if len(buffer) < need:
                # Copy what is there (bounded by max_body) to keep the buffer small.
                take = min(self.remaining, len(buffer))
                if take:
                    self.body += buffer[:take]
                    del buffer[:take]
                    self.remaining -= take
                    return self.remaining == 0 and len(buffer) >= 2
                return False
            self.body += buffer[:self.remaining]
            if buffer[self.remaining:need] != b"\r\n":
                raise _Refusal(400, "Chunk not followed by CRLF")
            del buffer[:need]
            self.remaining = 0
            self.state = _CHUNK_SIZE
            return True
        if self.state == _TRAILERS:
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                if len(buffer) > limits.max_header_bytes:
                    raise _Refusal(431, "Trailer fields too large")
                return False
            self.remaining += line_end + 2
            if self.remaining > limits.max_header_bytes:
                raise _Refusal(431, "Trailer fields too large")
            del buffer[:line_end + 2]
            if line_end == 0:  # trailers are not signed headers: read and dropped
                self._dispatch()
            return True
        return False

    def _maybe_continue(self) -> None:
        expect = [v for k, (_, v) in zip(self.names, self.headers) if k == "expect"]
        if expect and self.version == "HTTP/1.1" and self.transport is not None:
            if [v.strip().lower() for v in expect] != ["100-continue"]:
                raise _Refusal(417, "Unsupported Expect")
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # -- answering ------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        request = Request(self.method, self.target, self.path, self.query, self.version, self.headers,
                          bytes(self.body) if self.body else b"", self.client, self.names)
        self.state = _BUSY
        if self.raw is not None:
            self.request = request
        server = self.server
        try:
            if server._is_coroutine:
                result: Any = server.app(request)
            elif server._executor is not None:
                result = server._loop.run_in_executor(server._executor, server.app, request)  # type: ignore[union-attr]
            else:
                result = server.app(request)
        except Exception:
            log.exception("the application failed on %s %s", self.method, self.path)
            result = _INTERNAL_ERROR
        self._settle(result)

    def _settle(self, result: Any) -> None:
        """Answer with the application's result now, or when the awaitable it returned is done."""
        if result is not None and result.__class__ is not Response and inspect.isawaitable(result):
            self.task = asyncio.ensure_future(result)
            self.task.add_done_callback(self._finished)
        else:
            self._answer(result)

    def _finished(self, task: asyncio.Future[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("the application failed on %s %s", self.method, self.target, exc_info=exc)
            self._answer(Response(500, b'{"message":"Internal error"}', [("Content-Type", "application/json")]))
        else:
            self._answer(task.result())

    def _answer(self, response: Response | None) -> None:
        transport = self.transport
        if transport is None or self.state == _CLOSED or transport.is_closing():
            self.state = _CLOSED
            return
        if response is None:  # the application asked to drop the connection unanswered
            self._log(0, 0)
            self._close()
            return
        if response.authorized:
            self.authorized = True
        close = response.close or self.eof_pending or not self.keep_alive
        answer = _serialize(response, close, self.method == "HEAD", self.version == "HTTP/1.0")
        transport.write(answer)
        self._log(response.status, len(response.body))
        raw, self.raw = self.raw, None
        if (raw is not None and not close and self.method != "HEAD" and self.version == "HTTP/1.1"
                and self.server._inline and self.task is None):  # answered inline, not awaited
            assert self.request is not None
            self.known = (raw, self.request, response, [_date_cache[1], answer])
        if close:
            self._close()
            return
        self.state = _HEAD
        self._reset_request()
        self.in_request = bool(self.buffer)
        self.active = now = time.monotonic()
        if self.in_request:
            self.started = time.perf_counter()
            self.deadline = now + self.limits.request_timeout
        else:
            self.deadline = now + self.limits.keep_alive_timeout
        if self.reading_paused and len(self.buffer) <= self.limits.max_pipelined:
            self.reading_paused = False
            transport.resume_reading()
        if self.buffer:
            self._process()

    def _replay(self, known: tuple[bytes, Request, Response, list[bytes]]) -> None:
        """The keep-alive client sent, whole in one read, the very bytes of its last request.

        The application still decides: it is called with the Request parsed then (same method,
        target, headers and client), so every check it makes runs again (a token's expiry,
        credentials refreshed or expired, the container token). Only when it hands back the
        same Response object as last time do the bytes written then go out again (with the Date
        line of this second); anything else is answered the ordinary way. What is skipped is
        the layer's own work: buffering, parsing, making a Request, serialising."""
        _, request, expected, wire = known
        server = self.server
        if server.access_log is not None:
            self.started = time.perf_counter()
        self.active = now = time.monotonic()
        self.state = _BUSY
        try:
            response = server.app(request)
        except Exception:
            log.exception("the application failed on %s %s", request.method, request.path)
            response = _INTERNAL_ERROR
        if response is not expected:  # e.g. new credentials: this answer becomes the one remembered
            self.known = None
            self.raw, self.request = known[0], request
            self.in_request = True
            self.deadline = now + self.limits.request_timeout
            self.method, self.target, self.version, self.path = (
                request.method, request.target, request.version, request.path)
            self.keep_alive = True
            self._settle(response)
            return
        transport = self.transport
        if transport is None or transport.is_closing():
            self.state = _CLOSED
            return
        date = _date_header()
        if wire[0] is not date:
            wire[0], wire[1] = date, _serialize(expected, False)
        transport.write(wire[1])
        self.state = _HEAD
        if expected.authorized:
            self.authorized = True
        access_log = server.access_log
        if access_log is not None:
            access_log(self.client, request.method, request.target, expected.status, len(expected.body),
                       time.perf_counter() - self.started)
            self.started = 0.0
        self.deadline = now + self.limits.keep_alive_timeout

    def _refuse(self, status: int, message: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_refusal_response(status, message))
            self._log(status, 0)
        log.debug("refused %s: %d %s", self.client, status, message)
        self._close()

    def _log(self, status: int, size: int) -> None:
        access_log = self.server.access_log
        if access_log is not None:
            elapsed = time.perf_counter() - self.started if self.started else 0.0
            access_log(self.client, self.method or "-", self.target or "-", status, size, elapsed)

    def _close(self) -> None:
        self.state = _CLOSED
        self.deadline = 0.0
        self.buffer.clear()
        if self.transport is not None:
            self.transport.close()

    def _expire(self) -> None:
        """Called by the sweeper when this connection's deadline passed."""
        if self.state == _BUSY:  # the application is working; its answer is not ours to cut
            return
        if self.in_request and not self.writing_paused:
            self._refuse(408, "Request not received in time")
        elif self.transport is not None:
            self.state = _CLOSED
            self.transport.abort() if self.writing_paused else self.transport.close()


class HttpServer:
    """One listening socket serving `app` with the limits above.

    Either drive it from your own event loop (`await start()`, `await close()`), or from plain
    threads: `bind()` (errors such as a busy port surface here, in the caller's thread), then
    `start_in_thread()` and `stop()`. `port` is known after `bind()`.
    """

    def __init__(
        self,
        app: Application,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        limits: Limits | None = None,
        threaded: bool = False,
        max_workers: int = 16,
        hop_limit: int | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        if hop_limit is not None and not 1 <= hop_limit <= 255:
            raise ValueError("hop_limit must be between 1 and 255")
        self.app = app
        self.host, self._requested_port = host, port
        self.tls = tls
        self.limits = limits or Limits()
        self.hop_limit = hop_limit
        self.access_log = access_log
        self._is_coroutine = inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(
            getattr(app, "__call__", None)
        )
        self._threaded = threaded and not self._is_coroutine
        self._inline = not self._threaded and not self._is_coroutine  # answers in data_received
        self._max_workers = max_workers
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._sock: socket.socket | None = None
        self._accepting = False
        # Accepted, not made yet (asyncio's setup, a TLS handshake): each counts against the bound
        # until connection_made() moves it to _connections, and may be evicted meanwhile.
        self._setting_up: dict[_Connection, tuple[asyncio.Task[Any], socket.socket]] = {}
        self._capacity = self.limits.max_connections  # set from RLIMIT_NOFILE at start()
        self._out_of_descriptors_logged = 0.0
        self._out_of_descriptors_since = 0  # failed accepts not logged yet
        self._lingering = 0  # turned-away sockets waiting to be closed (_turn_away)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connections: set[_Connection] = set()
        self._heads: dict[bytes, _ParsedHead] = {}  # see _parse_request_head
        self._sweeper: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

    # -- binding --------------------------------------------------------------------------------

    def bind(self) -> HttpServer:
        """Open the listening socket (OSError: busy port, bad address...)."""
        if self._sock is not None:
            return self
        if not self.host:
            raise ValueError("an empty host would listen on every interface; name an address")
        infos = socket.getaddrinfo(self.host, self._requested_port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            # Without this, a server restarted on the same port meets TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(1024)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        return self

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("the server is not bound; call bind() first")
        return int(self._sock.getsockname()[1])

    @property
    def address(self) -> tuple[str, int]:
        if self._sock is None:
            raise RuntimeError("the server is not bound; call bind() first")
        name = self._sock.getsockname()
        return str(name[0]), int(name[1])

    # -- running in an event loop ---------------------------------------------------------------

    async def start(self) -> None:
        """Serve on the running loop (binds first if needed)."""
        self.bind()
        self._loop = asyncio.get_running_loop()
        if self._threaded and self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._max_workers, thread_name_prefix="rah-http")
        self._capacity = connection_budget(self.limits.max_connections)
        if self._capacity < self.limits.max_connections:
            log.warning("at most %d connections at once (not %d): the limit on open files is low; "
                        "raise it (systemd: LimitNOFILE=) to allow more", self._capacity,
                        self.limits.max_connections)
        # Our own accept loop rather than loop.create_server(): asyncio's logs a traceback per
        # failed accept when descriptors run out (hundreds of thousands a minute), and cannot
        # bound connections before a transport is made.
        self._accepting = True
        assert self._sock is not None
        self._loop.add_reader(self._sock.fileno(), self._accept)
        self._sweeper = asyncio.ensure_future(self._sweep())

    def _accept(self) -> None:
        sock, loop = self._sock, self._loop
        assert sock is not None and loop is not None
        evictions = 0
        for _ in range(64):  # a burst per wake-up, then others get their turn
            at_bound = len(self._connections) + len(self._setting_up) >= self._capacity
            if at_bound and evictions >= EVICTIONS_PER_WAKEUP:
                return  # the listening socket stays readable: the next turn goes on, victims closed
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._out_of_descriptors(exc)
                else:
                    log.debug("accept failed: %s", exc)
                return
            if at_bound:
                if not self._evict():
                    self._turn_away(conn)
                    continue
                evictions += 1
            conn.setblocking(False)
            connection = _Connection(self)

            def adopt(connection: _Connection = connection) -> _Connection:  # bound now, not at call time
                connection.adopted = True
                return connection

            task = loop.create_task(loop.connect_accepted_socket(
                adopt, conn, ssl=self.tls,
                ssl_handshake_timeout=self.limits.tls_handshake_timeout if self.tls else None))
            self._setting_up[connection] = (task, conn)
            task.add_done_callback(lambda done, connection=connection: self._setup_done(connection, done))

    def _setup_done(self, connection: _Connection, task: asyncio.Task[Any]) -> None:
        self._setting_up.pop(connection, None)  # made (a no-op then), failed or cancelled
        if not task.cancelled() and task.exception() is not None:  # a failed TLS handshake
            log.debug("connection setup failed: %s", task.exception())

    def _evict(self, setting_up: bool = True) -> bool:
        """Close the least recently active connection not being answered, first among those
        that never got an authorized answer, connections still being set up included (their
        activity is their accept) unless `setting_up` is False; False when there is none."""
        victim, stalest = None, (True, float("inf"))
        for connection in self._connections:
            if connection.state != _BUSY:
                key = (connection.authorized, connection.active)
                if key < stalest:
                    victim, stalest = connection, key
        for connection in self._setting_up if setting_up else ():  # in accept order: the first is the stalest
            if (False, connection.active) < stalest:
                victim = connection
            break
        if victim is None:
            return False
        victim.state = _CLOSED
        victim.deadline = 0.0
        if victim in self._setting_up:
            self._abandon_setup(victim)
            return True
        self._connections.discard(victim)
        if victim.transport is not None:
            victim.transport.abort()  # its descriptor is needed now, not after a graceful close
        return True

    def _abandon_setup(self, connection: _Connection) -> None:
        """Give up a connection still being set up: cancel asyncio's setup (which closes the
        transport it made, if it made one), or close the socket at once when the setup has not
        started (the cancelled coroutine then never runs, and nothing else would close it)."""
        connection.state = _CLOSED
        task, conn = self._setting_up.pop(connection)
        task.cancel()
        if not connection.adopted:
            conn.close()

    def _turn_away(self, conn: socket.socket) -> None:
        """503 and close. The close waits TURN_AWAY_LINGER (at most TURN_AWAY_LINGERING sockets
        at once, so a flood cannot hold descriptors): a request that arrives after the answer
        would otherwise meet a closed socket, and the reset it provokes can make the client
        lose the 503 before reading it."""
        if self.tls is not None:
            conn.close()
            return
        try:
            conn.setblocking(False)
            conn.send(_refusal_response(503, "Too many connections"))
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            conn.close()
            return
        if self._loop is None or self._lingering >= TURN_AWAY_LINGERING:
            conn.close()
            return
        self._lingering += 1

        def close() -> None:
            self._lingering -= 1
            conn.close()

        self._loop.call_later(TURN_AWAY_LINGER, close)

    def _out_of_descriptors(self, exc: OSError) -> None:
        """Stop accepting for ACCEPT_PAUSE (the listening socket stays readable, so retrying at
        once would spin), free one descriptor if a connection can give it up, and say so once a
        minute at most."""
        loop, sock = self._loop, self._sock
        assert loop is not None and sock is not None
        loop.remove_reader(sock.fileno())
        loop.call_later(ACCEPT_PAUSE, self._resume_accepting)
        self._evict(setting_up=False)  # one just accepted would give back nothing it has not just taken
        self._out_of_descriptors_since += 1
        now = time.monotonic()
        if now - self._out_of_descriptors_logged >= OUT_OF_DESCRIPTORS_LOG_INTERVAL:
            log.warning("out of file descriptors (%s): not accepting connections for a moment; "
                        "%d open, %d failed accepts since the last such line; raise the limit on "
                        "open files (systemd: LimitNOFILE=)", exc.strerror or exc,
                        len(self._connections), self._out_of_descriptors_since)
            self._out_of_descriptors_logged = now
            self._out_of_descriptors_since = 0

    def _resume_accepting(self) -> None:
        if self._accepting and self._loop is not None and self._sock is not None:
            self._loop.add_reader(self._sock.fileno(), self._accept)

    async def _sweep(self) -> None:
        # One timer for every connection instead of a timer per request: the hot path only
        # stores a number.
        while True:
            await asyncio.sleep(min(0.25, self.limits.request_timeout / 4, self.limits.keep_alive_timeout / 4))
            self._flush_log()
            now = time.monotonic()
            for connection in list(self._connections):
                if connection.deadline and connection.deadline <= now:
                    connection._expire()

    def _flush_log(self) -> None:
        flush = getattr(self.access_log, "flush", None)
        if flush is not None:
            flush()

    def stop_accepting(self) -> None:
        if self._accepting and self._loop is not None and self._sock is not None:
            self._accepting = False
            self._loop.remove_reader(self._sock.fileno())

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, let answers in progress finish (up to `grace`), close every connection."""
        self.stop_accepting()
        deadline = time.monotonic() + grace
        while any(c.state == _BUSY for c in self._connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self._connections):
            if connection.transport is not None:
                connection.transport.close()
            connection.state = _CLOSED
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._flush_log()
        for connection in list(self._setting_up):
            self._abandon_setup(connection)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # -- running in a thread --------------------------------------------------------------------

    def start_in_thread(self, name: str = "rolesanywhere-http") -> HttpServer:
        """Serve from a daemon thread with its own event loop; returns once serving."""
        if self._thread is not None:
            return self
        self.bind()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.close())
                loop.close()

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            raise failure[0]
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop a server started with start_in_thread(), or release a bound, unstarted socket."""
        thread, loop = self._thread, self._loop
        if thread is not None and loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            self._thread = None
        elif self._sock is not None:
            self._sock.close()
            self._sock = None
