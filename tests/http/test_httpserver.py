"""The shared HTTP layer on its own, over real sockets on loopback: framing, keep-alive,
limits, timeouts, connection bounds, TLS, and what applications may return."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rolesanywhere_hsm import httpserver
from rolesanywhere_hsm.errors import UsageError
from rolesanywhere_hsm.httpserver import HttpServer, Limits, Request, Response, clean_header_value, tls_context
from tests.http.rawclient import exchange, statuses


def echo(request: Request) -> Response:
    payload = {
        "method": request.method, "target": request.target, "path": request.path,
        "query": request.query, "version": request.version, "headers": request.headers,
        "body": request.body.decode("latin-1"),
    }
    return Response(200, json.dumps(payload).encode(), [("Content-Type", "application/json")])


@pytest.fixture
def serve() -> Iterator[Callable[..., HttpServer]]:
    started: list[HttpServer] = []

    def start(app: Any = echo, **kwargs: Any) -> HttpServer:
        server = HttpServer(app, **kwargs).start_in_thread()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def body_of(answer: bytes) -> Any:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


def test_keep_alive_serves_requests_in_order_on_one_connection(serve: Callable[..., HttpServer]) -> None:
    server = serve()
    with httpx.Client() as client:
        for i in range(3):
            response = client.post(f"http://127.0.0.1:{server.port}/p/a%2Fb?x={i}&y", content=b"hi")
            assert response.status_code == 200
            assert response.json()["path"] == "/p/a%2Fb"  # raw, as sent
            assert response.json()["query"] == f"x={i}&y"
            assert response.json()["body"] == "hi"
    assert len(server._connections) <= 1


def test_pipelined_requests_are_answered_in_order(serve: Callable[..., HttpServer]) -> None:
    server = serve()
    requests = b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(300))

    answer = exchange(server.port, requests)

    assert statuses(answer) == [200] * 300
    assert answer.count(b'"path": "/299"') == 1


def test_headers_reach_the_application_as_sent(serve: Callable[..., HttpServer]) -> None:
    server = serve()
    answer = exchange(server.port, b"GET / HTTP/1.1\r\nX-A: 1\r\nx-a:  2 \r\nHost: h\r\n\r\n")

    assert body_of(answer)["headers"] == [["X-A", "1"], ["x-a", "2"], ["Host", "h"]]


def test_http_1_0_closes_after_the_answer(serve: Callable[..., HttpServer]) -> None:
    server = serve()
    answer = exchange(server.port, b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n")
    assert statuses(answer) == [200]
    assert b"Connection: close" in answer


def test_http_1_0_keep_alive_when_asked(serve: Callable[..., HttpServer]) -> None:
    server = serve()
    answer = exchange(server.port, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n")
    assert statuses(answer) == [200, 200]
    assert answer.count(b"Connection: keep-alive") == 1 and answer.count(b"Connection: close") == 1


def test_chunked_body_with_extensions_and_trailers(serve: Callable[..., HttpServer]) -> None:
    server = serve()
    answer = exchange(server.port, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"3;ext=1\r\nabc\r\n0A\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n")
    assert statuses(answer) == [200]
    assert body_of(answer)["body"] == "abc0123456789"


def test_expect_100_continue(serve: Callable[..., HttpServer]) -> None:
    server = serve()
    answer = exchange(server.port, b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok")
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")


SMALL = Limits(max_request_line=100, max_header_bytes=200, max_headers=5, max_body=1000)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET /" + b"a" * 200, 414),  # not even a whole line yet
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 300 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 300, 431),
        (b"GET / HTTP/1.1\r\n" + b"A: 1\r\n" * 6 + b"\r\n", 431),
        (b"POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\nx", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nabc\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nabcde\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3E9\r\n", 400),  # 1001 > max_body
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1F4\r\n" + b"a" * 500 + b"\r\n"
         + b"1F4\r\n" + b"a" * 500 + b"\r\n" + b"1\r\na\r\n0\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab", 400),  # cut short
        (b"GET / HTTP/1.1\r\nX: 1\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX : 1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 400),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
        (b"G(T / HTTP/1.1\r\n\r\n", 400),
        (b"GET  / HTTP/1.1\r\n\r\n", 400),
        (b"GET foo HTTP/1.1\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # a TLS hello to a plain port
        (b"garbage", 400),
        (b"POST / HTTP/1.1\r\nExpect: something\r\nContent-Length: 1\r\n\r\nx", 417),
    ],
)
def test_malformed_or_oversized_requests_get_a_4xx_and_a_close(
    raw: bytes, status: int, serve: Callable[..., HttpServer]
) -> None:
    server = serve(limits=SMALL)

    answer = exchange(server.port, raw)

    assert statuses(answer) == [status], answer[:200]
    assert b"Connection: close" in answer
    assert exchange(server.port, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200 ")


def test_an_empty_connection_is_closed_without_an_answer(serve: Callable[..., HttpServer]) -> None:
    server = serve()
    assert exchange(server.port, b"") == b""
    assert exchange(server.port, b"\r\n\r\n") == b""  # blank lines before a request are ignored


def test_header_values_from_the_application_cannot_split_the_answer(serve: Callable[..., HttpServer]) -> None:
    def app(request: Request) -> Response:
        return Response(200, b"", [("X-Echo", request.query.replace("%0D%0A", "\r\n") + "\x00\x7f\tz")])

    server = serve(app)
    answer = exchange(server.port, b"GET /?a%0D%0AInjected:%201 HTTP/1.1\r\n\r\n")

    assert b"\r\nX-Echo: aInjected:%201 z\r\n" in answer
    assert b"\r\nInjected" not in answer
    assert clean_header_value("a\r\nb\x01\tc") == "ab c"


def test_an_application_may_drop_the_connection(serve: Callable[..., HttpServer]) -> None:
    server = serve(lambda request: None)
    assert exchange(server.port, b"GET / HTTP/1.1\r\n\r\n") == b""


def test_async_and_threaded_applications(serve: Callable[..., HttpServer]) -> None:
    async def slow(request: Request) -> Response:
        await asyncio.sleep(0.01)
        return Response(200, b"async")

    threads: set[str] = set()

    def in_thread(request: Request) -> Response:
        threads.add(threading.current_thread().name)
        return Response(201, b"thread")

    async_server, threaded_server = serve(slow), serve(in_thread, threaded=True)
    assert httpx.get(f"http://127.0.0.1:{async_server.port}/").text == "async"
    assert httpx.get(f"http://127.0.0.1:{threaded_server.port}/").status_code == 201
    assert all(name.startswith("rah-http") for name in threads)


def test_an_application_error_is_a_500_and_the_server_stays_up(serve: Callable[..., HttpServer]) -> None:
    def broken(request: Request) -> Response:
        if request.path == "/boom":
            raise RuntimeError("bug")
        return Response(200)

    server = serve(broken)
    assert statuses(exchange(server.port, b"GET /boom HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n")) == [500, 200]


@pytest.mark.slow  # waits on a clock: waits for the 0.5 s request deadline
def test_a_drip_sender_gets_408_at_the_request_deadline(serve: Callable[..., HttpServer]) -> None:
    server = serve(limits=Limits(request_timeout=0.5))
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        answer = b""
        for byte in b"GET / HTTP/1.1\r\nX: " + b"a" * 1000:  # a byte every 20 ms: never done in time
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(0.02)
            try:
                answer += sock.recv(4096)
            except (socket.timeout, ConnectionResetError):
                continue
            if answer:
                break
    elapsed = time.monotonic() - started
    assert statuses(answer) == [408]
    assert 0.5 <= elapsed < 10


def test_an_idle_keep_alive_connection_is_closed_silently(serve: Callable[..., HttpServer]) -> None:
    server = serve(limits=Limits(keep_alive_timeout=0.3))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        answer = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert statuses(answer) == [200]  # and then EOF, without a 408


def test_slow_clients_do_not_starve_fast_ones(serve: Callable[..., HttpServer]) -> None:
    server = serve(limits=Limits(request_timeout=60))
    slow = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(50)]
    try:
        for sock in slow:  # each holds a request half sent, for as long as this test wants
            sock.sendall(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nhalf")
        with httpx.Client() as client:
            answers = [client.get(f"http://127.0.0.1:{server.port}/{i}") for i in range(100)]
        assert [a.status_code for a in answers] == [200] * 100
        for sock in slow:  # the slow ones are still served once they finish
            sock.sendall(b"x" * 96)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in slow:
            sock.close()


def test_connections_beyond_the_bound_get_503_while_every_one_is_being_answered(
    serve: Callable[..., HttpServer]
) -> None:
    release = threading.Event()

    def slow(request: Request) -> Response:
        release.wait(10)
        return Response(200, b"ok", authorized=True)

    server = serve(slow, threaded=True, limits=Limits(max_connections=3))
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(3)]
    try:
        for sock in held:
            sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        deadline = time.monotonic() + 10
        while sum(c.state == httpserver._BUSY for c in list(server._connections)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)  # all three being answered
        assert statuses(exchange(server.port, b"GET / HTTP/1.1\r\n\r\n")) == [503]
        release.set()
        for sock in held:
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        release.set()
        for sock in held:
            sock.close()
    assert statuses(exchange(server.port, b"GET / HTTP/1.1\r\n\r\n")) == [200]


def test_at_the_bound_a_newcomer_takes_the_place_of_the_stalest_unauthorized_connection(
    serve: Callable[..., HttpServer]
) -> None:
    """#16 item 8: a client without a token, keeping connections alive with health checks,
    cannot keep an SDK out."""
    def app(request: Request) -> Response:
        return Response(200, b"ok", authorized=request.header("authorization") == "right")

    server = serve(app, limits=Limits(max_connections=4))
    port = server.port
    sdk = socket.create_connection(("127.0.0.1", port), timeout=10)
    sdk.sendall(b"GET /creds HTTP/1.1\r\nAuthorization: right\r\n\r\n")
    assert sdk.recv(65536).startswith(b"HTTP/1.1 200 ")
    squatters = []
    try:
        for _ in range(3):  # the rest of the bound, each kept alive by a health check
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            squatters.append(sock)
            time.sleep(0.01)  # distinct activity times
        squatters[1].sendall(b"GET /healthz HTTP/1.1\r\n\r\n")  # squatters[0] is now the stalest
        assert squatters[1].recv(65536).startswith(b"HTTP/1.1 200 ")
        for _ in range(3):  # SDK connections keep getting in, each taking a squatter's place
            assert statuses(exchange(port, b"GET /creds HTTP/1.1\r\nAuthorization: right\r\n\r\n")) == [200]
        assert squatters[0].recv(65536) == b""  # the stalest one was closed first
        # Authorized connections go last: the SDK's, older than every squatter, is still open.
        sdk.sendall(b"GET /creds HTTP/1.1\r\nAuthorization: right\r\n\r\n")
        assert sdk.recv(65536).startswith(b"HTTP/1.1 200 ")
        assert len(server._connections) <= 4
    finally:
        sdk.close()
        for sock in squatters:
            sock.close()


def test_hop_limit_sets_the_ttl_of_accepted_sockets(serve: Callable[..., HttpServer]) -> None:
    server = serve(hop_limit=3)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        (connection,) = server._connections
        accepted = connection.transport.get_extra_info("socket")
        assert accepted.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 3
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    with pytest.raises(ValueError):
        HttpServer(echo, hop_limit=0)


def test_a_busy_port_and_an_empty_host_are_refused_at_bind(serve: Callable[..., HttpServer]) -> None:
    server = serve()
    with pytest.raises(OSError):
        HttpServer(echo, port=server.port).bind()
    with pytest.raises(ValueError, match="every interface"):
        HttpServer(echo, host="").bind()


def test_access_log_gets_one_line_per_answer(serve: Callable[..., HttpServer]) -> None:
    lines: list[tuple[Any, ...]] = []
    server = serve(access_log=lambda *entry: lines.append(entry))
    exchange(server.port, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nBAD\r\n\r\n")
    assert [(m, t, s) for _, m, t, s, _, _ in lines] == [("GET", "/a", 200), ("GET", "/b", 200), ("-", "-", 400)]


# -- TLS ---------------------------------------------------------------------------------------


def test_tls_serves_and_a_stalled_handshake_stalls_no_one(
    serve: Callable[..., HttpServer], emulator_tls_files: tuple[Path, Path, Path]
) -> None:
    cert, key, ca = emulator_tls_files
    server = serve(tls=tls_context(cert, key))
    context = ssl.create_default_context(cafile=str(ca))
    stalled = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(5)]
    try:
        stalled[0].sendall(b"\x16\x03\x01")  # the start of a ClientHello, and then nothing
        with httpx.Client(verify=context) as client:
            for _ in range(3):
                assert client.get(f"https://127.0.0.1:{server.port}/").status_code == 200
    finally:
        for sock in stalled:
            sock.close()


def test_tls_files_that_cannot_load_are_named(tmp_path: Path, emulator_tls_files: tuple[Path, Path, Path]) -> None:
    cert, key, _ = emulator_tls_files
    with pytest.raises(UsageError, match="nonexistent.pem"):
        tls_context(tmp_path / "nonexistent.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(UsageError, match="garbage.pem"):
        tls_context(garbage, key)


def test_an_encrypted_tls_key_is_refused_without_a_prompt(
    tmp_path: Path, emulator_tls_files: tuple[Path, Path, Path]
) -> None:
    from cryptography.hazmat.primitives import serialization

    cert, key, _ = emulator_tls_files
    loaded = serialization.load_pem_private_key(key.read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(loaded.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret-pass"),
    ))
    # In a child without a terminal's help: a prompt would hang until the timeout.
    code = (
        "import sys\nfrom rolesanywhere_hsm.httpserver import tls_context\n"
        "from rolesanywhere_hsm.errors import UsageError\n"
        f"try:\n    tls_context({str(cert)!r}, {str(encrypted)!r})\n"
        "except UsageError as e:\n    print(e)\n"
    )
    result = subprocess.run([__import__("sys").executable, "-c", code], capture_output=True, text=True,
                            timeout=30, stdin=subprocess.DEVNULL)
    assert "encrypted.key is encrypted" in result.stdout, result.stderr


def test_parsed_heads_are_remembered_boundedly_and_never_mixed_up(serve: Callable[..., HttpServer]) -> None:
    """A keep-alive client's repeated head is parsed once (issue 21: parsing was the largest part
    of a credential GET); distinct heads each get their own answer and the memory stays bounded."""
    server = serve()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for i in range(600):
            sock.sendall(b"GET /p%d?q=%d HTTP/1.1\r\nX-N: %d\r\n\r\n" % (i % 300, i, i))
            answer = b""
            while b"}" not in answer:
                answer += sock.recv(65536)
            sent = body_of(answer)
            assert (sent["path"], sent["query"], sent["headers"]) == (f"/p{i % 300}", f"q={i}", [["X-N", str(i)]])
        for _ in range(3):  # the same head again: answered from the remembered parse, same answer
            sock.sendall(b"GET /again HTTP/1.1\r\nX-N: 1\r\n\r\n")
            answer = b""
            while b"}" not in answer:
                answer += sock.recv(65536)
            assert body_of(answer)["path"] == "/again"
    assert 0 < len(server._heads) <= 256
    # A remembered head with a body still reads the body, and one that closes still closes.
    assert body_of(exchange(server.port, b"POST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"))["body"] == "hi"
    assert body_of(exchange(server.port, b"POST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nho"))["body"] == "ho"
    closing = exchange(server.port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", half_close=False)
    assert b"Connection: close" in closing


def test_single_header_is_the_value_only_when_sent_exactly_once() -> None:
    def request(*headers: tuple[str, str], names: bool = True) -> Request:
        return Request("GET", "/", "/", "", "HTTP/1.1", headers, b"", ("-", 0),
                       tuple(k.lower() for k, _ in headers) if names else ())

    for with_names in (True, False):  # the parser's lowercase names, or none (a Request made by hand)
        assert request(("Authorization", "a"), ("X", "b"), names=with_names).single_header("authorization") == "a"
        assert request(("X", "b"), names=with_names).single_header("Authorization") is None
        assert request(("authorization", "a"), ("AUTHORIZATION", "a"), names=with_names).single_header(
            "Authorization") is None
