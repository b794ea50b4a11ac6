"""The container-credentials endpoint: the bearer token (generated or from a file, compared in
constant time), 503 when nothing is held, the health path, the router, the access log, and
botocore's own container provider as the client."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from rolesanywhere_hsm.errors import UsageError
from rolesanywhere_hsm.httpserver import HttpServer
from rolesanywhere_hsm.servers.app import HEALTH_PATH, access_logger
from rolesanywhere_hsm.servers.container import CONTAINER_PATH, ContainerApp, generate_token, read_token_file
from rolesanywhere_hsm.servers.snapshot import SnapshotCache
from tests.http.rawclient import exchange, statuses
from tests.servers.conftest import CONTAINER_TOKEN, Holder, Running, make_credentials


def test_the_document_with_the_right_token(serve_app: Callable[..., Running]) -> None:
    running = serve_app()
    response = httpx.get(running.url + CONTAINER_PATH, headers={"Authorization": CONTAINER_TOKEN})
    held = running.holder.credentials
    assert held is not None
    assert response.status_code == 200
    assert response.json() == {
        "AccessKeyId": held.access_key_id, "SecretAccessKey": held.secret_access_key,
        "Token": held.session_token, "Expiration": held.expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@pytest.mark.parametrize("headers", [{}, {"Authorization": "wrong"}, {"Authorization": CONTAINER_TOKEN + "x"},
                                     {"Authorization": "Bearer " + CONTAINER_TOKEN},
                                     [("Authorization", CONTAINER_TOKEN)] * 2])
def test_a_missing_or_wrong_token_is_401(headers: Any, serve_app: Callable[..., Running]) -> None:
    running = serve_app()
    assert httpx.get(running.url + CONTAINER_PATH, headers=headers).status_code == 401


def test_503_when_nothing_is_held(serve_app: Callable[..., Running]) -> None:
    running = serve_app(Holder(None))
    response = httpx.get(running.url + CONTAINER_PATH, headers={"Authorization": CONTAINER_TOKEN})
    assert response.status_code == 503
    assert "AccessKeyId" not in response.text


def test_without_a_token_the_path_does_not_exist(serve_app: Callable[..., Running]) -> None:
    running = serve_app(container_token=None)
    assert httpx.get(running.url + CONTAINER_PATH, headers={"Authorization": CONTAINER_TOKEN}).status_code == 404


def test_imds_can_be_off(serve_app: Callable[..., Running]) -> None:
    running = serve_app(imds=False)
    response = httpx.put(running.url + "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    assert response.status_code == 404
    assert httpx.get(running.url + CONTAINER_PATH, headers={"Authorization": CONTAINER_TOKEN}).status_code == 200


def test_health_follows_the_credentials(serve_app: Callable[..., Running]) -> None:
    holder = Holder(None)
    running = serve_app(holder)
    assert httpx.get(running.url + HEALTH_PATH).status_code == 503
    holder.credentials = make_credentials()
    healthy = httpx.get(running.url + HEALTH_PATH)
    assert healthy.status_code == 200 and healthy.json()["status"] == "ok"
    assert holder.credentials.access_key_id not in healthy.text


def test_generated_tokens_are_long_and_distinct() -> None:
    tokens = {generate_token() for _ in range(100)}
    assert len(tokens) == 100 and all(len(t) >= 40 for t in tokens)
    with pytest.raises(ValueError):
        ContainerApp(SnapshotCache(Holder()), "short")


def test_token_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("a-token-from-a-file-0123456789")
    path.chmod(0o600)
    assert read_token_file(path) == "a-token-from-a-file-0123456789"
    for content, message in (("short", "at least 16"), ("x" * 2000, "larger than"), ("with space in it 0123456789", "at least 16")):
        path.write_text(content)
        with pytest.raises(UsageError, match=message):
            read_token_file(path)
    with pytest.raises(UsageError, match="not a regular file"):
        read_token_file(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="not a regular file"):
        read_token_file(fifo)  # and does not hang
    with pytest.raises(UsageError, match="Cannot read the container token file"):
        read_token_file(tmp_path / "missing")


def _botocore_token_headers(token_file: Path) -> dict[str, str]:
    """What botocore's container provider sends for AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE."""
    from botocore.credentials import ContainerProvider

    return ContainerProvider(environ={"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file)})._build_headers()


@pytest.mark.parametrize("content", ["a-token-from-a-file-0123456789\n", "a-token-from-a-file-0123456789\r\n",
                                     "  a-token-from-a-file-0123456789", "a-token-from-a-file-0123456789 \n"])
def test_a_token_file_the_sdks_refuse_is_refused_with_the_way_to_write_it(content: str, tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(content, newline="")
    path.chmod(0o600)
    if "\n" in content:
        with pytest.raises(ValueError, match="not a legal header value"):
            _botocore_token_headers(path)  # the SDK's side of the same file
    with pytest.raises(UsageError, match="AWS SDKs send the file as it is") as refused:
        read_token_file(path)
    assert "tr -d" in refused.value.message and "a-token-from-a-file" not in refused.value.message


def test_the_token_file_written_as_the_docs_say_works_for_serve_and_botocore(tmp_path: Path) -> None:
    import subprocess

    path = tmp_path / "token"
    # docs/serve.md's block, run as written there (into a temporary file instead of /etc).
    docs = (Path(__file__).parents[2] / "docs" / "serve.md").read_text()
    block = docs.split("### The container token file", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    assert "tr -d" in block
    subprocess.run(["sh", "-ec", block.replace("/etc/rolesanywhere-hsm/container-token", str(path))], check=True)
    assert path.stat().st_mode & 0o777 == 0o600
    token = read_token_file(path)
    assert len(token) == 64
    assert _botocore_token_headers(path) == {"Authorization": token}


@pytest.mark.parametrize("mode", [0o604, 0o644, 0o666])
def test_a_token_file_others_can_read_is_refused(mode: int, tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("a-token-from-a-file-0123456789")
    path.chmod(mode)
    with pytest.raises(UsageError, match="can be read by others") as refused:
        read_token_file(path)
    assert f"chmod o-r {path}" in refused.value.message
    path.chmod(0o640)  # its group may read it: the workloads that send it share the file
    assert read_token_file(path) == "a-token-from-a-file-0123456789"


def test_hostile_requests_get_4xx_and_the_server_stays_up(serve_app: Callable[..., Running]) -> None:
    running = serve_app()
    for raw in (
        b"PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 99999\r\n\r\n",
        b"GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
        b"DELETE /container/credentials HTTP/1.1\r\n\r\n",
        b"\x00\xff garbage \r\n\r\n",
        b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n",
    ):
        found = statuses(exchange(running.server.port, raw))
        assert found and all(400 <= s <= 499 for s in found), (raw[:60], found)
    assert httpx.get(running.url + CONTAINER_PATH, headers={"Authorization": CONTAINER_TOKEN}).status_code == 200


def test_the_access_log_has_one_line_per_answer_and_no_secret(serve_app: Callable[..., Running]) -> None:
    stream = io.StringIO()
    holder = Holder(make_credentials())
    from rolesanywhere_hsm.servers.app import ServeApp

    server = HttpServer(ServeApp(holder, role_name="r", container_token=CONTAINER_TOKEN),
                        access_log=access_logger(stream)).start_in_thread()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as client:
            imds_token = client.put("/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "5"}).text
            client.get("/latest/meta-data/iam/security-credentials/r", headers={"X-aws-ec2-metadata-token": imds_token})
            client.get(CONTAINER_PATH, headers={"Authorization": CONTAINER_TOKEN})
            client.get(CONTAINER_PATH)
    finally:
        server.stop()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4
    assert ['"PUT /latest/api/token" 200', '"GET /latest/meta-data/iam/security-credentials/r" 200',
            f'"GET {CONTAINER_PATH}" 200', f'"GET {CONTAINER_PATH}" 401'] == [
        line.split(" ", 3)[3].rsplit(" ", 2)[0] for line in lines]
    assert holder.credentials is not None
    for secret in (imds_token, CONTAINER_TOKEN, holder.credentials.secret_access_key,
                   holder.credentials.session_token, holder.credentials.access_key_id):
        assert secret not in stream.getvalue()


def test_botocore_container_provider_gets_the_credentials(serve_app: Callable[..., Running], monkeypatch: Any,
                                                          tmp_path: Path) -> None:
    import botocore.session

    running = serve_app()
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", running.url + CONTAINER_PATH)
    token_file = tmp_path / "token"
    token_file.write_text(CONTAINER_TOKEN)
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    credentials = botocore.session.Session().get_credentials()

    assert credentials is not None and credentials.method == "container-role"
    held = running.holder.credentials
    assert held is not None
    assert credentials.get_frozen_credentials().secret_key == held.secret_access_key


def test_a_401_closes_the_connection(serve_app: Callable[..., Running]) -> None:
    running = serve_app()
    answer = exchange(running.server.port, b"GET /container/credentials HTTP/1.1\r\nAuthorization: wrong-wrong-wrong-wrong\r\n\r\n"
                      b"GET /healthz HTTP/1.1\r\n\r\n", half_close=False)
    assert statuses(answer) == [401] and b"Connection: close" in answer  # the health request is never read


def test_health_checks_without_the_token_cannot_keep_an_sdk_out() -> None:
    """#16 item 8: one client without the token keeps every connection alive with /healthz."""
    import socket

    from rolesanywhere_hsm.httpserver import Limits
    from rolesanywhere_hsm.servers.app import ServeApp

    holder = Holder(make_credentials())
    server = HttpServer(ServeApp(holder, role_name="r", imds=False, container_token=CONTAINER_TOKEN),
                        limits=Limits(max_connections=8)).start_in_thread()
    squatters = []
    try:
        for _ in range(8):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            squatters.append(sock)
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", headers={"Authorization": CONTAINER_TOKEN}) as sdk:
            for _ in range(5):
                response = sdk.get(CONTAINER_PATH)
                assert response.status_code == 200 and response.json()["AccessKeyId"]
            for sock in squatters:  # keep them alive again, as the squatter would every 25 s
                try:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
                    sock.recv(65536)
                except OSError:
                    pass
            assert sdk.get(CONTAINER_PATH).status_code == 200  # its authorized connection was kept
        assert len(server._connections) <= 8
    finally:
        for sock in squatters:
            sock.close()
        server.stop()


def test_routes_are_one_table_that_others_can_extend(serve_app: Callable[..., Running]) -> None:
    from rolesanywhere_hsm.httpserver import Response

    running = serve_app()
    running.app.route("/custom", lambda request: Response(200, b"custom"))
    assert httpx.get(running.url + "/custom").text == "custom"
    assert {HEALTH_PATH, CONTAINER_PATH, "/livez", "/readyz", "/metrics", "/custom"} == set(running.app.routes)
    assert httpx.get(running.url + "/nowhere").status_code == 404


def test_access_log_lines_are_the_same_when_remembered_and_odd_targets_stay_cut() -> None:
    """The log remembers the middle of a repeated line (issue 21 item 3): the lines must not change."""
    stream = io.StringIO()
    log = access_logger(stream, prefix="p")
    odd = "/x?" + "é" * 300
    for seconds in (0.00012, 0.25):
        log(("127.0.0.1", 1), "GET", CONTAINER_PATH, 200, 99, seconds)
        log(("127.0.0.2", 2), "GET", CONTAINER_PATH, 401, 5, seconds)
        log(("127.0.0.1", 1), "GET", odd, 404, 0, seconds)
    log.flush()  # type: ignore[attr-defined]
    lines = [line.split(" ", 2)[2] for line in stream.getvalue().splitlines()]
    assert all(line.startswith("p: 20") for line in stream.getvalue().splitlines())
    assert lines[:2] == [f'127.0.0.1 "GET {CONTAINER_PATH}" 200 99 0.1ms', f'127.0.0.2 "GET {CONTAINER_PATH}" 401 5 0.1ms']
    assert lines[3:5] == [f'127.0.0.1 "GET {CONTAINER_PATH}" 200 99 250.0ms', f'127.0.0.2 "GET {CONTAINER_PATH}" 401 5 250.0ms']
    assert lines[2].rsplit(" ", 3)[1:] == ["404", "0", "0.1ms"] and lines[5].rsplit(" ", 3)[1:] == ["404", "0", "250.0ms"]
    assert len(lines[2]) < 260 and "é" * 201 not in lines[2]  # cut to 200 characters and redacted, every time
