"""The emulator facing a hostile world, over raw sockets on loopback: whatever arrives, an
answer in 4xx (or a clean close when nothing arrived), never a 5xx, never a crash; many
concurrent mixed requests all answered correctly; slow clients do not hold up fast ones; the
record stays bounded; nothing from a request splits an answer header."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import string
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rolesanywhere_hsm._dev.devpki import CertificateAuthority
from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
from tests.emulator.conftest import sign
from tests.http.rawclient import exchange, statuses
from tests.oracle import SignedRequest


def raw_request(signed: SignedRequest, *, extra: bytes = b"", body: bytes | None = None) -> bytes:
    url = urlsplit(signed.url)
    target = url.path + (f"?{url.query}" if url.query else "")
    body = signed.body if body is None else body
    head = f"POST {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in signed.headers.items())
    return head.encode() + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body


_TOKEN = st.text(alphabet=string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~", min_size=1, max_size=12)
_ANY_LINE = st.binary(max_size=200)
_METHOD = st.one_of(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]), _TOKEN)
_TARGET = st.one_of(
    st.sampled_from(["/sessions", "/", "*", "http://x/sessions", "/sessions?x=%zz&&=", "/%00"]),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=60).map(lambda t: "/" + t),
)
_HEADER = st.one_of(
    st.tuples(st.sampled_from(["Content-Length", "Transfer-Encoding", "Authorization", "X-Amz-Date",
                               "X-Amz-X509", "Host", "Connection", "Expect"]),
              st.text(max_size=40)),
    st.tuples(_TOKEN, st.text(max_size=40)),
)
_CHUNKED = st.lists(
    st.one_of(st.binary(max_size=30).map(lambda b: b"%x\r\n%s\r\n" % (len(b), b)),
              st.sampled_from([b"-1\r\n", b"0x3\r\nabc\r\n", b"FFFFFFFFFFFFFFFFFF\r\n", b"zz\r\n", b"3\r\nabcd"]),
              _ANY_LINE),
    max_size=4,
).map(lambda parts: b"".join(parts) + b"0\r\n\r\n")


@st.composite
def requests(draw: Any) -> bytes:
    """A request that is anything from nearly right to garbage."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(min_size=1, max_size=300))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 ", "http/1.1"]))
    line = f"{draw(_METHOD)} {draw(_TARGET)} {version}".encode("utf-8", "surrogatepass")
    headers = b"".join(f"{n}: {v}\r\n".encode("utf-8", "surrogatepass") for n, v in draw(st.lists(_HEADER, max_size=8)))
    body = draw(st.one_of(st.binary(max_size=200), _CHUNKED))
    return line + b"\r\n" + headers + b"\r\n" + body


@pytest.mark.slow  # hypothesis, 300 requests over HTTP
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=requests())
def test_any_request_gets_a_4xx_or_a_clean_close_never_a_5xx(raw: bytes, emulator: Emulator) -> None:
    answer = exchange(emulator.port, raw)

    found = statuses(answer)
    assert answer == b"" or found, answer[:300]  # an answer is a well-formed HTTP answer
    assert all(400 <= status <= 499 for status in found), (raw[:300], answer[:300])


def test_the_emulator_survives_the_property_test_and_still_issues(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    for raw in (b"\x00" * 100, b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", b"POST /sessions HTTP/1.1\r\n\r\n"):
        assert all(400 <= s <= 499 for s in statuses(exchange(emulator.port, raw)))
    assert statuses(exchange(emulator.port, raw_request(sign(emulator, p256_key, leaf)))) == [201]


def test_a_repeated_signed_header_is_an_invalid_signature(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    signed = sign(emulator, p256_key, leaf)
    repeated = raw_request(signed, extra=f"X-Amz-Date: {signed.headers['X-Amz-Date']}\r\n".encode())

    answer = exchange(emulator.port, repeated)

    assert statuses(answer) == [403]
    assert b"Invalid signature" in answer
    assert emulator.last_request.detail == "header x-amz-date sent 2 times"


def test_request_values_echoed_into_headers_lose_cr_and_lf(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    signed = sign(emulator, p256_key, leaf, body_fields={"roleSessionName": "x\r\nX-Injected: yes\x01\x1b[31m"})

    answer = exchange(emulator.port, raw_request(signed))

    head = answer.split(b"\r\n\r\n", 1)[0]
    assert statuses(answer) == [400]
    assert b"X-Rah-Emulator-Detail: " in head
    assert b"\r\nX-Injected" not in head
    assert not any(c < 0x20 and c not in (0x0D, 0x0A) for c in head)


def test_the_record_keeps_the_last_n_requests_without_bodies(root_ca: CertificateAuthority, p256_key: Any, leaf: Any) -> None:
    config = EmulatorConfig.for_certificates([root_ca.certificate])
    with Emulator(config, max_records=3, record_bodies=False) as emulator:
        for i in range(5):
            exchange(emulator.port, b"POST /nowhere/%d HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody" % i)
        assert [r.path for r in emulator.requests] == ["/nowhere/2", "/nowhere/3", "/nowhere/4"]
        assert all(r.body == b"" for r in emulator.requests)


def test_an_empty_host_is_refused(root_ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="every interface"):
        Emulator(EmulatorConfig.for_certificates([root_ca.certificate]), host="")


async def _send_all(port: int, payloads: list[bytes]) -> list[bytes]:
    async def one(payload: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(payload)
            writer.write_eof()
            return await asyncio.wait_for(reader.read(), timeout=60)
        finally:
            writer.close()

    return await asyncio.gather(*(one(p) for p in payloads))


@pytest.mark.slow  # 500 concurrent requests
def test_500_concurrent_mixed_requests_are_all_answered_correctly(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    good = [raw_request(sign(emulator, p256_key, leaf)) for _ in range(200)]
    tampered = sign(emulator, p256_key, leaf)
    kinds: list[tuple[bytes, int]] = (
        [(g, 201) for g in good]
        + [(raw_request(tampered, body=b'{"durationSeconds":901}'), 403)] * 60
        + [(b"GET /sessions HTTP/1.1\r\n\r\n", 405)] * 60
        + [(b"POST /sessions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nabc\r\n", 400)] * 60
        + [(b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431)] * 40
        + [(b"POST /sessions HTTP/1.1\r\nContent-Length: 9999999\r\n\r\n", 413)] * 40
        + [(b"\x16\x03\x01 garbage", 400)] * 40
    )
    assert len(kinds) == 500

    answers = asyncio.run(_send_all(emulator.port, [payload for payload, _ in kinds]))

    got = [statuses(answer) for answer in answers]
    assert got == [[status] for _, status in kinds]
    assert len(emulator.issued) == 200


def test_slow_clients_do_not_starve_fast_ones(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    slow = [socket.create_connection(("127.0.0.1", emulator.port), timeout=30) for _ in range(40)]
    try:
        for i, sock in enumerate(slow):  # half a request each, held open while the fast ones run
            sock.sendall(raw_request(sign(emulator, p256_key, leaf))[: 50 + i * 20])
        fast = [exchange(emulator.port, raw_request(sign(emulator, p256_key, leaf))) for _ in range(20)]
        assert [statuses(answer) for answer in fast] == [[201]] * 20
        assert len(emulator.issued) == 20
    finally:
        for sock in slow:
            sock.close()
    assert dt.datetime.now(dt.timezone.utc) < emulator.last_issued.expiration
