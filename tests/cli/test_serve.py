"""`rolesanywhere-hsm serve` as a real process: a SoftHSM key, the emulator on loopback, botocore
as the client, pkcs11-spy counting what the token does, SIGTERM at the end."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from rolesanywhere_hsm.cli import main
from rolesanywhere_hsm.cli.serve import _listen_address
from rolesanywhere_hsm._dev.devpki import CertificateAuthority, write_pem
from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
from rolesanywhere_hsm.errors import UsageError
from rolesanywhere_hsm._dev.softhsm import SoftHsmToken
from tests.cli.test_credential_process_pkcs11 import spy  # noqa: F401  (fixture)
from tests.clirunner import typer_command_kept
from tests.http.rawclient import exchange, listening_addresses, statuses
from tests.signers.test_pkcs11_spy import counts, parse_spy_log

pytestmark = pytest.mark.softhsm
ROOT = Path(__file__).parents[2]
ROLE_PATH = "/latest/meta-data/iam/security-credentials/rolesanywhere-hsm-emulator"


@dataclass
class Serve:
    process: subprocess.Popen[str]
    port: int
    stderr_file: Path
    exports: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stderr(self) -> str:
        return self.stderr_file.read_text()

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


@pytest.fixture
def server(root_ca: CertificateAuthority) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig.for_certificates([root_ca.certificate])) as emulator:
        yield emulator


@pytest.fixture
def start_serve(softhsm_token: SoftHsmToken, softhsm_env: dict[str, str], intermediate_ca: CertificateAuthority,
                tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    chain = write_pem(tmp_path / "intermediates.pem", intermediate_ca.certificate)
    started: list[Serve] = []

    def start(emulator: Emulator, *extra: str, env: dict[str, str] | None = None) -> Serve:
        index = len(started)
        port_file, stderr_file = tmp_path / f"port-{index}", tmp_path / f"serve-{index}.err"
        args = [
            sys.executable, "-m", "rolesanywhere_hsm", "serve",
            "--certificate", softhsm_token.uri_for("ec-p256", type="cert"), "--intermediates", str(chain),
            "--trust-anchor-arn", emulator.trust_anchor_arn, "--profile-arn", emulator.profile_arn,
            "--role-arn", emulator.role_arn, "--endpoint", emulator.url,
            "--port", "0", "--port-file", str(port_file), *extra,
        ]
        with stderr_file.open("w") as err:
            process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, text=True,
                                       env=env or softhsm_env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        deadline = time.monotonic() + 60
        while not port_file.exists() or "export AWS_CONTAINER" not in stderr_file.read_text():
            if process.poll() is not None:
                raise AssertionError(f"serve exited early ({process.returncode}): {stderr_file.read_text()}")
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"serve did not start: {stderr_file.read_text()}")
            time.sleep(0.05)
        exports = dict(re.findall(r"^export (\w+)=(\S+)$", stderr_file.read_text(), re.M))
        running = Serve(process, int(port_file.read_text()), stderr_file, exports)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait(10)


def _clean_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")


def test_botocore_gets_credentials_through_imds_and_the_container_endpoint(
    server: Emulator, start_serve: Callable[..., Serve], monkeypatch: pytest.MonkeyPatch
) -> None:
    import botocore.session

    running = start_serve(server)
    issued = server.last_issued
    assert set(running.exports) == {"AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                                    "AWS_CONTAINER_AUTHORIZATION_TOKEN"}
    _clean_aws_env(monkeypatch)
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", running.exports["AWS_EC2_METADATA_SERVICE_ENDPOINT"])
    imds = botocore.session.Session().get_credentials()
    monkeypatch.delenv("AWS_EC2_METADATA_SERVICE_ENDPOINT")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN"):
        monkeypatch.setenv(name, running.exports[name])
    container = botocore.session.Session().get_credentials()

    assert imds is not None and imds.method == "iam-role"
    assert container is not None and container.method == "container-role"
    for credentials in (imds, container):
        frozen = credentials.get_frozen_credentials()
        assert (frozen.access_key, frozen.secret_key, frozen.token) == (
            issued.access_key_id, issued.secret_access_key, issued.session_token)
    assert len(server.issued) == 1

    assert running.stop() == 0
    stderr = running.stderr
    assert "rolesanywhere-hsm serve stopped" in stderr and "Traceback" not in stderr
    assert re.search(r'"GET /container/credentials" 200 ', stderr)
    assert re.search(r'"PUT /latest/api/token" 200 ', stderr)
    for secret in (issued.secret_access_key, issued.session_token):
        assert secret not in stderr


def test_200_concurrent_imds_fetches_share_one_create_session(server: Emulator, start_serve: Callable[..., Serve]) -> None:
    running = start_serve(server)

    async def fetch(client: httpx.AsyncClient) -> dict[str, Any]:
        token = await client.put("/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"})
        assert token.status_code == 200
        headers = {"X-aws-ec2-metadata-token": token.text}
        listing = await client.get("/latest/meta-data/iam/security-credentials/", headers=headers)
        document = await client.get(f"/latest/meta-data/iam/security-credentials/{listing.text}", headers=headers)
        assert document.status_code == 200
        return document.json()

    async def run() -> list[dict[str, Any]]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=running.url, limits=limits, timeout=30) as client:
            return await asyncio.gather(*(fetch(client) for _ in range(200)))

    documents = asyncio.run(run())

    assert len(documents) == 200
    assert {d["AccessKeyId"] for d in documents} == {server.last_issued.access_key_id}
    assert all(d["Code"] == "Success" and d["Token"] and d["SecretAccessKey"] for d in documents)
    assert len(server.issued) == 1
    assert running.stop() == 0


def test_hostile_requests_get_4xx_and_serve_stays_up(server: Emulator, start_serve: Callable[..., Serve]) -> None:
    running = start_serve(server)
    hostile = [
        b"PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 0\r\n\r\n",
        b"PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 21601\r\n\r\n",
        b"PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        b"GET " + ROLE_PATH.encode() + b" HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: " + b"a" * 100000 + b"\r\n\r\n",
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
        b"DELETE /latest/api/token HTTP/1.1\r\n\r\n",
        b"POST /container/credentials HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        b"GET /container/credentials HTTP/1.1\r\nAuthorization: guess-guess-guess-guess\r\n\r\n",
        b"\x16\x03\x01\x00\xff garbage",
        b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
    ]
    for raw in hostile:
        found = statuses(exchange(running.port, raw))
        assert found and all(400 <= s <= 499 for s in found), (raw[:80], found)
    token = running.exports["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    assert httpx.get(running.url + "/container/credentials", headers={"Authorization": token}).status_code == 200
    assert httpx.get(running.url + "/healthz").json()["status"] == "ok"
    assert running.stop() == 0


@pytest.mark.slow
def test_serve_rides_out_an_outage_and_never_serves_unusable_credentials(
    server: Emulator, start_serve: Callable[..., Serve]
) -> None:
    server.config.credential_lifetime = 20
    running = start_serve(server)
    token = running.exports["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    first = server.last_issued.access_key_id
    server.refuse_for(30)
    seen: list[tuple[int, str | None]] = []
    deadline = time.monotonic() + 90
    with httpx.Client(base_url=running.url, headers={"Authorization": token}, timeout=10) as client:
        while time.monotonic() < deadline:
            asked = dt.datetime.now(dt.timezone.utc)
            response = client.get("/container/credentials")
            if response.status_code == 200:
                body = response.json()
                assert body["AccessKeyId"] and body["SecretAccessKey"] and body["Token"]
                expiration = dt.datetime.fromisoformat(body["Expiration"].replace("Z", "+00:00"))
                assert expiration > asked, "an expired credential was served with 200"
                seen.append((200, body["AccessKeyId"]))
                if body["AccessKeyId"] != first:
                    break
            else:
                assert response.status_code == 503, response.text
                assert "AccessKeyId" not in response.text
                seen.append((503, None))
            time.sleep(0.25)
    phases = [seen[0]]
    for item in seen[1:]:
        if item != phases[-1]:
            phases.append(item)
    assert [status for status, _ in phases] == [200, 503, 200], phases
    assert phases[0][1] == first and phases[2][1] not in (None, first)
    assert running.stop() == 0
    assert "refresh failed" in running.stderr


@pytest.mark.slow
def test_one_login_and_one_signature_per_refresh_and_sigterm_closes_the_session(
    server: Emulator, start_serve: Callable[..., Serve], spy: tuple[dict[str, str], Path],  # noqa: F811
) -> None:
    env, log = spy
    server.config.credential_lifetime = 4
    running = start_serve(server, env=env)
    deadline = time.monotonic() + 90
    while len(server.issued) < 6 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert running.stop() == 0
    refreshes = len(server.issued)
    assert refreshes >= 6, running.stderr  # the first fetch and at least five refreshes

    calls = parse_spy_log(log)
    counted = counts(calls)
    assert counted["C_Login"] == 1
    assert counted["C_Sign(real)"] == refreshes
    names = [c.name for c in calls]
    last_sign = len(names) - 1 - names[::-1].index("C_Sign")
    # After the last signature: log out, close the session, finalise the module (SIGTERM path).
    assert names[last_sign + 1:] == ["C_Logout", "C_CloseSession", "C_Finalize"]


def test_a_busy_port_is_a_one_line_error_before_any_login(
    server: Emulator, softhsm_token: SoftHsmToken, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exited:
            main(["serve", "--certificate", softhsm_token.uri_for("ec-p256", type="cert"),
                  "--trust-anchor-arn", server.trust_anchor_arn, "--profile-arn", server.profile_arn,
                  "--role-arn", server.role_arn, "--endpoint", server.url, "--port", str(port)])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and err.count("\n") == 1
    assert server.requests == []


def test_an_unwritable_port_file_is_a_one_line_error_before_any_login(
    server: Emulator, softhsm_token: SoftHsmToken, softhsm_env: dict[str, str], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in softhsm_env.items():
        monkeypatch.setenv(name, value)  # a PIN is at hand: only the order can keep the login away
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--certificate", softhsm_token.uri_for("ec-p256", type="cert"),
              "--trust-anchor-arn", server.trust_anchor_arn, "--profile-arn", server.profile_arn,
              "--role-arn", server.role_arn, "--endpoint", server.url, "--port", "0",
              "--port-file", str(tmp_path / "missing" / "port")])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "cannot write --port-file" in err and err.count("\n") == 1
    assert server.requests == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--address", "10.1.2.3"], "not a loopback address"),
        (["--address", "example.com"], "is not an IP address"),
        (["--address", ""], "--address is empty"),
        (["--hop-limit", "0"], "--hop-limit"),
        (["--port", "70000"], "--port"),
        (["--tls-key", "/x.key"], "--tls-key needs --tls-cert"),
        (["--container-token-file", "/nonexistent/token"], "Cannot read the container token file"),
        (["--port-file", "/nonexistent/dir/port"], "cannot write --port-file /nonexistent/dir/port"),
        (["--port-file", "/"], "--port-file / is a directory"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["serve", "--certificate", "/nonexistent.pem",
            "--trust-anchor-arn", "arn:aws:rolesanywhere:us-east-1:111122223333:trust-anchor/11111111-2222-3333-4444-555555555555",
            "--profile-arn", "arn:aws:rolesanywhere:us-east-1:111122223333:profile/11111111-2222-3333-4444-555555555555",
            "--role-arn", "arn:aws:iam::111122223333:role/r"]
    with pytest.raises(SystemExit) as exited, typer_command_kept():  # one typer build for the file
        main([*base, *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_serve_listens_on_loopback_only_by_default(server: Emulator, start_serve: Callable[..., Serve]) -> None:
    running = start_serve(server)
    assert listening_addresses(running.port) == {"127.0.0.1"}
    assert running.exports["AWS_EC2_METADATA_SERVICE_ENDPOINT"].startswith("http://127.0.0.1:")
    assert running.stop() == 0


def test_listen_address_rules() -> None:
    assert _listen_address("127.0.0.1", False) == ("127.0.0.1", True)
    assert _listen_address("localhost", False) == ("127.0.0.1", True)
    assert _listen_address("::1", False) == ("::1", True)
    assert _listen_address("[::1]", False) == ("::1", True)
    assert _listen_address("10.1.2.3", True) == ("10.1.2.3", False)  # IMDS off
    assert _listen_address("0.0.0.0", True) == ("0.0.0.0", False)
    with pytest.raises(UsageError, match="allow-non-loopback"):
        _listen_address("0.0.0.0", False)


def test_export_lines_name_the_token_file_and_imds_can_be_off(
    server: Emulator, start_serve: Callable[..., Serve], tmp_path: Path
) -> None:
    token_file = tmp_path / "container-token"
    token_file.write_text("token-from-a-file-0123456789abcdef")  # as botocore reads it: no newline
    token_file.chmod(0o600)
    running = start_serve(server, "--container-token-file", str(token_file), "--no-imds")
    assert running.exports["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] == str(token_file.resolve())
    assert "AWS_CONTAINER_AUTHORIZATION_TOKEN" not in running.exports
    assert "AWS_EC2_METADATA_SERVICE_ENDPOINT" not in running.exports
    imds = httpx.put(running.url + "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    assert imds.status_code == 404
    assert "token-from-a-file" not in running.stderr
    response = httpx.get(running.exports["AWS_CONTAINER_CREDENTIALS_FULL_URI"],
                         headers={"Authorization": "token-from-a-file-0123456789abcdef"})
    assert response.status_code == 200 and json.loads(response.text)["AccessKeyId"]
    assert running.stop() == 0


def test_serves_https(server: Emulator, start_serve: Callable[..., Serve],
                      emulator_tls_files: tuple[Path, Path, Path]) -> None:
    import ssl

    cert, key, ca = emulator_tls_files
    running = start_serve(server, "--tls-cert", str(cert), "--tls-key", str(key))
    uri = running.exports["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
    assert uri.startswith("https://127.0.0.1:")
    response = httpx.get(uri, headers={"Authorization": running.exports["AWS_CONTAINER_AUTHORIZATION_TOKEN"]},
                         verify=ssl.create_default_context(cafile=str(ca)))
    assert response.status_code == 200
    assert response.json()["AccessKeyId"] == server.last_issued.access_key_id
    assert running.stop() == 0
