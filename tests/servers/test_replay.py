"""A keep-alive client that sends the very bytes of its last request is answered without
parsing or serialising again (issue 21 item 3), yet the application still decides every time:
these tests send identical requests on one connection and change what the answer depends on
(credentials refreshed or expired, an IMDS token expired, the container token wrong) between
them."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from rolesanywhere_hsm.httpserver import HttpServer
from rolesanywhere_hsm.servers.app import ServeApp
from rolesanywhere_hsm.servers.imds import ImdsTokens
from tests.servers.conftest import CONTAINER_TOKEN, FakeClock, Holder, make_credentials

CONTAINER_GET = b"GET /container/credentials HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n"
ROLE_GET = b"GET /latest/meta-data/iam/security-credentials/serve-role HTTP/1.1\r\nHost: x\r\n" \
           b"X-aws-ec2-metadata-token: %s\r\n\r\n"


class Served:
    def __init__(self, holder: Holder, wall: FakeClock, monotonic: FakeClock) -> None:
        self.holder, self.wall, self.monotonic = holder, wall, monotonic
        self.lines: list[tuple[Any, ...]] = []
        self.app = ServeApp(holder, role_name="serve-role", container_token=CONTAINER_TOKEN,
                            wall_clock=wall, tokens=ImdsTokens(clock=monotonic))
        self.server = HttpServer(self.app, access_log=lambda *line: self.lines.append(line)).start_in_thread()

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.server.port), timeout=10)

    def remembered(self) -> int:
        """Connections holding an answer to replay (the fast path engaged)."""
        return sum(1 for c in list(self.server._connections) if c.known is not None)


@pytest.fixture
def served() -> Iterator[Served]:
    now = time.time()
    running = Served(Holder(make_credentials(3600)), FakeClock(now), FakeClock(1000.0))
    yield running
    running.server.stop()


def read_answers(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """`count` whole answers (status, lowercase headers, body), framed by Content-Length."""
    data, answers = b"", []
    while len(answers) < count:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            lines = data[:end].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            length = int(headers["content-length"])
            if len(data) >= end + 4 + length:
                answers.append((int(lines[0].split()[1]), headers, data[end + 4:end + 4 + length]))
                data = data[end + 4 + length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(answers)} answers"
        data += chunk
    assert not data
    return answers


def ask(sock: socket.socket, request: bytes) -> tuple[int, dict[str, str], bytes]:
    sock.sendall(request)
    return read_answers(sock, 1)[0]


def test_a_repeated_container_get_is_replayed_and_follows_refresh_and_expiry(served: Served) -> None:
    request = CONTAINER_GET % CONTAINER_TOKEN.encode()
    first = served.holder.credentials
    assert first is not None
    with served.connect() as sock:
        answers = [ask(sock, request) for _ in range(4)]
        assert served.remembered() == 1
        assert {(status, json.loads(body)["AccessKeyId"]) for status, _, body in answers} == {(200, first.access_key_id)}
        assert all(re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} [\d:]{8} GMT", h["date"]) for _, h, _ in answers)

        refreshed = make_credentials(3600)
        served.holder.credentials = refreshed  # the refresh engine hands out a new set
        status, _, body = ask(sock, request)
        assert (status, json.loads(body)["AccessKeyId"]) == (200, refreshed.access_key_id)
        status, _, body = ask(sock, request)  # and the new answer is the one replayed
        assert (status, json.loads(body)["AccessKeyId"]) == (200, refreshed.access_key_id)
        assert served.remembered() == 1

        served.wall.advance(3601)  # the held set expired: never served from the remembered bytes
        status, _, body = ask(sock, request)
        assert status == 503 and b"AccessKeyId" not in body and refreshed.secret_access_key.encode() not in body
    # Every answer, replayed or not, is one access-log line (written just after the answer).
    deadline = time.monotonic() + 5
    while len(served.lines) < 7 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [line[3] for line in served.lines] == [200] * 6 + [503]
    assert {line[1:3] for line in served.lines} == {("GET", "/container/credentials")}


@pytest.mark.parametrize("wrong", [b"", CONTAINER_TOKEN[:-1].encode() + b"X", CONTAINER_TOKEN.encode() + b"0"])
def test_a_wrong_or_missing_container_token_is_401_after_the_right_one_was_replayed(
        served: Served, wrong: bytes) -> None:
    with served.connect() as sock:
        for _ in range(3):
            assert ask(sock, CONTAINER_GET % CONTAINER_TOKEN.encode())[0] == 200
        assert served.remembered() == 1
        request = CONTAINER_GET % wrong if wrong else b"GET /container/credentials HTTP/1.1\r\nHost: x\r\n\r\n"
        status, headers, body = ask(sock, request)
        assert (status, headers.get("connection")) == (401, "close") and b"AccessKeyId" not in body
        assert sock.recv(1) == b""  # closed, as every 401 is


def test_a_replayed_imds_get_is_refused_once_its_token_expired(served: Served) -> None:
    token = served.app.imds._tokens.issue(60)  # type: ignore[union-attr]
    request = ROLE_GET % token.encode()
    with served.connect() as sock:
        for _ in range(3):
            status, _, body = ask(sock, request)
            assert status == 200 and json.loads(body)["Code"] == "Success"
        assert served.remembered() == 1
        served.monotonic.advance(61)
        status, headers, body = ask(sock, request)
        assert (status, headers.get("connection"), body) == (401, "close", b"")


def test_pipelined_repeats_are_all_answered_in_order(served: Served) -> None:
    request = CONTAINER_GET % CONTAINER_TOKEN.encode()
    health = b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"
    with served.connect() as sock:
        for _ in range(3):
            assert ask(sock, request)[0] == 200
        assert served.remembered() == 1
        sock.sendall(request * 3 + health + request)
        answers = read_answers(sock, 5)
        assert [status for status, _, _ in answers] == [200] * 5
        assert [json.loads(body).get("status") for _, _, body in answers] == [None, None, None, "alive", None]
        # A request split across reads is not the remembered bytes: answered the ordinary way.
        sock.sendall(request[:20])
        time.sleep(0.05)
        sock.sendall(request[20:])
        assert read_answers(sock, 1)[0][0] == 200
        assert ask(sock, request)[0] == 200


def test_a_repeat_is_answered_when_the_application_turns_to_awaiting() -> None:
    """A plain function may return an awaitable: the replayed request is then answered the
    ordinary way, and an awaited answer is never the one remembered."""
    from rolesanywhere_hsm.httpserver import Request, Response

    same = Response(200, b"same")
    calls: list[int] = []

    def app(request: Request) -> Any:
        calls.append(1)
        if len(calls) <= 3:
            return same

        async def later() -> Response:
            return Response(201, b"later")

        return later()

    server = HttpServer(app).start_in_thread()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            answers = [ask(sock, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n") for _ in range(6)]
        assert [(status, body) for status, _, body in answers] == [(200, b"same")] * 3 + [(201, b"later")] * 3
        assert len(calls) == 6
    finally:
        server.stop()
