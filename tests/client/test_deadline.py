"""One time budget per CreateSession call, cut at the socket; bounded answers; checked credentials.

Fault servers on loopback (tests/fixtures/faults.py) drip, stay silent, send endless or
oversized bodies; each test gives the call a budget of about a second and checks both that the
call ended because of the budget (the phase in the message, the server's byte count) and that
it ended soon after it (with a margin wide enough for a loaded machine).
"""

from __future__ import annotations

import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from rolesanywhere_hsm.arn import validate_session_arns
from rolesanywhere_hsm.client import MAX_ANSWER_BYTES, RetryPolicy, RolesAnywhereClient
from rolesanywhere_hsm.deadline import Deadline
from rolesanywhere_hsm._dev.devpki import CertificateAuthority
from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
from rolesanywhere_hsm.errors import DeadlineExceededError, RolesAnywhereError, TransportError
from rolesanywhere_hsm.signers import SignerConfig, load_signer
from rolesanywhere_hsm.signers.base import Signer
from tests.fixtures.faults import FaultServer, answer, credentials_answer, refused_url

ANCHOR = "arn:aws:rolesanywhere:eu-west-1:111122223333:trust-anchor/0c3a9e57-5b3f-4d8a-9f0e-3f3f6a1b2c3d"
PROFILE = "arn:aws:rolesanywhere:eu-west-1:111122223333:profile/9a8b7c6d-1111-2222-3333-444455556666"
ROLE = "arn:aws:iam::111122223333:role/Workload"
ARNS = validate_session_arns(ANCHOR, PROFILE, ROLE)
BUDGET = 1.0
MARGIN = 1.5  # thread scheduling on a loaded two-core machine; the faults would run for minutes
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)


@pytest.fixture(scope="module")
def signer(leaf_files: dict[str, Any]) -> Iterator[Signer]:
    files = leaf_files["p256"]
    with load_signer(SignerConfig(str(files.certificate), str(files.key))) as opened:
        yield opened


def call(url: str, signer: Signer, budget: float = BUDGET, retry: RetryPolicy = FAST) -> tuple[float, RolesAnywhereError | None]:
    """Call CreateSession at `url` with `budget`; (seconds it took, the error or None)."""
    start = time.monotonic()
    try:
        with RolesAnywhereClient("eu-west-1", endpoint=url, retry=retry, trust_env=False) as client:
            client.create_session(signer, ARNS, deadline=Deadline.after(budget))
    except RolesAnywhereError as exc:
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


@pytest.mark.slow  # waits on a clock: about a second: the call's time budget
def test_a_server_that_drips_its_status_line_is_cut_at_the_deadline(signer: Signer) -> None:
    # A byte every 0.2 s: each read succeeds well within any per-read timeout, so only a total
    # budget enforced per read ends this.
    with FaultServer("drip-status", interval=0.2) as server:
        elapsed, error = call(server.url, signer)
        dripped = server.sent_bytes
    assert isinstance(error, DeadlineExceededError) and error.exit_code == 7
    assert "1 s time budget ran out waiting for the answer" in error.message
    assert dripped >= 3  # it really was dripping when the budget ran out
    assert BUDGET - 0.05 <= elapsed < BUDGET + MARGIN


@pytest.mark.slow  # waits on a clock: about a second: the call's time budget
def test_a_server_that_drips_its_body_is_cut_at_the_deadline(signer: Signer) -> None:
    with FaultServer("drip-body", interval=0.2) as server:
        elapsed, error = call(server.url, signer)
    assert isinstance(error, DeadlineExceededError)
    assert "waiting for the answer" in error.message
    assert BUDGET - 0.05 <= elapsed < BUDGET + MARGIN
    assert server.connections == 1  # no retry: the budget is spent


@pytest.mark.slow  # waits on a clock: about a second: the call's time budget
def test_a_silent_server_is_cut_at_the_deadline_without_retries(signer: Signer) -> None:
    with FaultServer("silent") as server:
        elapsed, error = call(server.url, signer)
    assert isinstance(error, DeadlineExceededError)
    assert "waiting for the answer" in error.message and "(attempt 1)" in error.message
    assert BUDGET - 0.05 <= elapsed < BUDGET + MARGIN
    assert server.connections == 1


@pytest.mark.slow  # waits on a clock: about a second: the call's time budget
def test_a_tls_handshake_that_never_completes_names_the_tls_phase(signer: Signer) -> None:
    with FaultServer("silent") as server:
        elapsed, error = call(server.url.replace("http://", "https://"), signer)
    assert isinstance(error, DeadlineExceededError)
    assert "in the TLS handshake with" in error.message
    assert elapsed < BUDGET + MARGIN


@pytest.mark.slow  # waits on a clock: about a second: the call's time budget
def test_a_connect_that_hangs_names_the_connect_phase(signer: Signer) -> None:
    # A listener that never accepts, its backlog filled: further SYNs are dropped, so connect()
    # hangs as it does towards a firewalled host.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.1)
        elapsed, error = call(f"http://127.0.0.1:{port}", signer)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    assert isinstance(error, DeadlineExceededError)
    assert "ran out connecting to" in error.message
    assert elapsed < BUDGET + MARGIN


def test_a_refused_connection_is_retried_and_ends_with_exit_7(signer: Signer) -> None:
    elapsed, error = call(refused_url(), signer)
    assert isinstance(error, TransportError) and not isinstance(error, DeadlineExceededError)
    assert error.message.startswith("Cannot connect to") and error.exit_code == 7
    assert elapsed < BUDGET + MARGIN


class _FixedDelays(RetryPolicy):
    def delay(self, attempt: int) -> float:
        return self.base_delay


def test_retries_stop_when_the_budget_cannot_hold_another_attempt(
    signer: Signer, root_ca: CertificateAuthority
) -> None:
    """Fake clock: each backoff moves it 0.4 s; a 1 s budget holds attempts at 0, 0.4, 0.8 only."""
    now = [1000.0]
    with Emulator(EmulatorConfig.for_certificates([root_ca.certificate])) as server:
        server.inject_failures([500] * 20)
        arns = validate_session_arns(server.trust_anchor_arn, server.profile_arn, server.role_arn)
        with RolesAnywhereClient(
            server.region, endpoint=server.url, retry=_FixedDelays(attempts=10, base_delay=0.4)
        ) as client:
            client._sleep = lambda seconds: now.__setitem__(0, now[0] + seconds)
            with pytest.raises(TransportError) as info:
                client.create_session(signer, arns, deadline=Deadline.after(1.0, clock=lambda: now[0]))
        assert len(server.requests) == 3
    # A persistent 5xx is the service being unavailable: exit 7, with its text on one line.
    assert info.value.exit_code == 7 and not isinstance(info.value, DeadlineExceededError)
    assert "HTTP 500 (InternalServerException: " in info.value.message


def test_an_already_spent_budget_makes_no_call(signer: Signer) -> None:
    with FaultServer("silent") as server:
        spent = Deadline(at=0.0, budget=2.0)
        with RolesAnywhereClient("eu-west-1", endpoint=server.url, trust_env=False) as client:
            with pytest.raises(DeadlineExceededError, match="ran out before"):
                client.create_session(signer, ARNS, deadline=spent)
        assert server.connections == 0


def test_an_endless_answer_is_refused_at_one_mib_with_bounded_memory(signer: Signer) -> None:
    with FaultServer("endless-body") as server:
        tracemalloc.start()
        try:
            elapsed, error = call(server.url, signer, budget=10.0)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        sent = server.sent_bytes
    assert isinstance(error, TransportError) and error.exit_code == 7
    assert "larger than 1 MiB" in error.message
    assert peak < 4 * MAX_ANSWER_BYTES
    assert server.connections == 1  # an oversized answer is not asked for again
    assert sent > MAX_ANSWER_BYTES  # the server did send more than the cap


def test_a_declared_huge_length_is_refused_before_reading(signer: Signer) -> None:
    with FaultServer("huge-length") as server:
        elapsed, error = call(server.url, signer, budget=10.0)
    assert isinstance(error, TransportError) and "larger than 1 MiB" in error.message
    assert elapsed < 5  # not the budget: refused on the header


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"expiration": "2001-01-01T00:00:00Z"}, "they expired at 2001-01-01T00:00:00Z"),
        ({"expiration": "2099-01-01T00:00:00"}, "expiration is not a timestamp with a timezone"),
        ({"expiration": "soon"}, "expiration is not a timestamp with a timezone"),
        ({"accessKeyId": 12345}, "accessKeyId is not a string (int)"),
        ({"sessionToken": ""}, "sessionToken is empty"),
        ({"secretAccessKey": ...}, "secretAccessKey is missing"),
        ({"secretAccessKey": None}, "secretAccessKey is missing"),
        ({"sessionToken": ["a"]}, "sessionToken is not a string (list)"),
    ],
)
def test_a_201_with_unusable_credentials_is_exit_7(signer: Signer, overrides: dict[str, Any], reason: str) -> None:
    with FaultServer("fixed", payload=credentials_answer(**overrides)) as server:
        _, error = call(server.url, signer)
    assert isinstance(error, TransportError) and error.exit_code == 7
    assert error.message == f"The service answered with unusable credentials: {reason}."
    assert "fault-secret" not in error.diagnostics() and "fault-token" not in error.diagnostics()


def test_a_good_201_from_a_plain_server_is_read(signer: Signer) -> None:
    """The control for the cases above: the same server with a good answer gives credentials."""
    with FaultServer("fixed", payload=credentials_answer()) as server:
        with RolesAnywhereClient("eu-west-1", endpoint=server.url, trust_env=False) as client:
            credentials = client.create_session(signer, ARNS, deadline=Deadline.after(5))
    assert credentials.access_key_id == "ASIAFAULTSERVER00001"
    assert credentials.role_arn == "arn:aws:iam::111122223333:role/r"


def test_deeply_nested_json_in_a_201_is_exit_7(signer: Signer) -> None:
    body = b"[" * 200000
    with FaultServer("fixed", payload=answer(201, body)) as server:
        _, error = call(server.url, signer)
    assert isinstance(error, TransportError) and "not JSON" in error.message


def test_server_text_in_an_error_is_one_escaped_shortened_line(signer: Signer) -> None:
    message = "denied\x1b[2J\x1b[31m\nline two\u202e" + "x" * 1000
    body = ('{"message": ' + __import__("json").dumps(message) + "}").encode()
    payload = answer(403, body, {"X-Amzn-ErrorType": "AccessDeniedException\x1b]0;title\x07:http://x"})
    with FaultServer("fixed", payload=payload) as server:
        _, error = call(server.url, signer)
    assert error is not None and error.exit_code == 6
    text = error.message
    assert "\x1b" not in text and "\n" not in text and "\u202e" not in text
    assert "\\x1b[2J" in text and "\\x0aline two\\u202e" in text
    assert len(text) < 400 and text.endswith("...")


def test_endless_headers_end_in_a_transport_error(signer: Signer) -> None:
    with FaultServer("endless-headers") as server:
        elapsed, error = call(server.url, signer, budget=10.0)
    assert isinstance(error, TransportError) and error.exit_code == 7
    assert elapsed < 5  # refused by the header size limit, not by the budget
    assert server.connections <= 3


@pytest.mark.slow  # waits on a clock: about a second: the call's time budget
def test_the_budget_also_holds_through_a_proxy(signer: Signer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadline backend sits under the proxy transports too: a silent proxy is cut."""
    with FaultServer("silent") as proxy:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        start = time.monotonic()
        with RolesAnywhereClient("eu-west-1", endpoint="http://localhost:9", retry=FAST) as client:
            with pytest.raises(DeadlineExceededError, match="waiting for the answer"):
                client.create_session(signer, ARNS, deadline=Deadline.after(BUDGET))
        elapsed = time.monotonic() - start
        assert proxy.connections == 1
    assert BUDGET - 0.05 <= elapsed < BUDGET + MARGIN


@pytest.mark.slow  # waits on a clock: about a second: the call's time budget
def test_a_retry_cut_by_the_budget_says_why_it_was_retried(signer: Signer) -> None:
    """First attempt: a 503; the second meets silence; the message keeps the first failure."""
    busy = answer(503, b'{"message": "busy"}', {"X-Amzn-ErrorType": "ServiceUnavailableException"})
    with FaultServer("script", script=[busy, None]) as server:
        _, error = call(server.url, signer)
        assert server.connections == 2
    assert isinstance(error, DeadlineExceededError)
    assert "(attempt 2). The attempt before: The endpoint failed with HTTP 503 " \
        "(ServiceUnavailableException: busy)." in error.message


def test_a_per_operation_timeout_becomes_the_budget() -> None:
    import httpx

    with RolesAnywhereClient("eu-west-1", timeout=httpx.Timeout(7.0, connect=3.0)) as client:
        assert client.timeout == 7.0
    with RolesAnywhereClient("eu-west-1") as client:
        assert client.timeout == 20.0


@pytest.mark.slow  # waits on a clock: about a second: the call's time budget
def test_a_name_lookup_that_hangs_is_cut_at_the_deadline(signer: Signer, monkeypatch: pytest.MonkeyPatch) -> None:
    """getaddrinfo has no timeout; a resolver that never answers is stood in for by one that
    waits until released (the real resolver cannot be made to hang on loopback)."""
    release = threading.Event()
    real = socket.getaddrinfo

    def hanging(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "hangs.example":
            release.wait(30)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    try:
        elapsed, error = call("https://hangs.example", signer)
    finally:
        release.set()
    assert isinstance(error, DeadlineExceededError)
    assert "ran out looking up the address of https://hangs.example" in error.message
    assert BUDGET - 0.05 <= elapsed < BUDGET + MARGIN


def test_localhost_is_resolved_and_each_address_tried(signer: Signer) -> None:
    with FaultServer("fixed", payload=credentials_answer()) as server:
        with RolesAnywhereClient("eu-west-1", endpoint=f"http://localhost:{server.port}", trust_env=False) as client:
            credentials = client.create_session(signer, ARNS, deadline=Deadline.after(5))
    assert credentials.access_key_id == "ASIAFAULTSERVER00001"


def _chunked(status: int, body: bytes, size: int, extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n{extra}\r\n".encode()
    chunks = b"".join(b"%x;ext=1\r\n" % len(body[i:i + size]) + body[i:i + size] + b"\r\n"
                      for i in range(0, len(body), size))
    return head + chunks + b"0\r\nX-Trailer: t\r\n\r\n"


def test_a_chunked_201_is_read(signer: Signer) -> None:
    good = credentials_answer()
    body = good[good.index(b"\r\n\r\n") + 4:]
    with FaultServer("fixed", payload=_chunked(201, body, 7)) as server:
        with RolesAnywhereClient("eu-west-1", endpoint=server.url, trust_env=False) as client:
            credentials = client.create_session(signer, ARNS, deadline=Deadline.after(5))
    assert credentials.access_key_id == "ASIAFAULTSERVER00001"


def test_a_chunked_answer_over_one_mib_is_refused(signer: Signer) -> None:
    with FaultServer("fixed", payload=_chunked(201, b"[" * (2 * MAX_ANSWER_BYTES), 65536)) as server:
        _, error = call(server.url, signer, budget=10.0)
        assert server.connections == 1  # not asked for again
    assert isinstance(error, TransportError) and "larger than 1 MiB" in error.message


def test_an_answer_cut_short_is_a_retried_transport_error(signer: Signer) -> None:
    short = b"HTTP/1.1 201 Created\r\nContent-Length: 500\r\nConnection: close\r\n\r\n{\"credentialSet\""
    with FaultServer("script", script=[short, short, short]) as server:
        _, error = call(server.url, signer, budget=5.0)
        assert server.connections == 3  # a dropped answer may get through on another attempt
    assert isinstance(error, TransportError) and not isinstance(error, DeadlineExceededError)
    assert error.message.startswith("HTTP error talking to http://127.0.0.1") and error.exit_code == 7


def test_an_encoding_not_asked_for_is_refused(signer: Signer) -> None:
    payload = answer(201, b"\x1f\x8b" + b"\x00" * 20, {"Content-Encoding": "gzip"})
    with FaultServer("fixed", payload=payload) as server:
        _, error = call(server.url, signer)
    assert isinstance(error, TransportError) and "Content-Encoding gzip, which was not asked for" in error.message
