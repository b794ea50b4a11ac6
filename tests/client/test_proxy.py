"""Proxies from the environment are honoured (as by every AWS SDK); --no-proxy ignores them."""

from __future__ import annotations

import http.client
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from rolesanywhere_hsm._dev.devpki import CertificateAuthority
from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
from tests.clirunner import run_cli


class ForwardingProxy(ThreadingHTTPServer):
    """A plain-HTTP forward proxy on loopback that records the URLs it forwarded."""

    daemon_threads = True

    def __init__(self) -> None:
        self.forwarded: list[str] = []
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(BaseHTTPRequestHandler):
    server: ForwardingProxy

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        target = urlsplit(self.path)  # absolute-form: the client knows it talks to a proxy
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.forwarded.append(self.path)
        upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
        upstream.request("POST", f"{target.path}?{target.query}", body=body, headers=headers)
        answer = upstream.getresponse()
        payload = answer.read()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[ForwardingProxy]:
    server = ForwardingProxy()
    # shutdown() waits for the loop's next poll: 0.05 s instead of the default 0.5 s.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def server(root_ca: CertificateAuthority) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig.for_certificates([root_ca.certificate])) as emulator:
        yield emulator


def run(server: Emulator, files: Any, proxy: ForwardingProxy, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and not k.startswith("AWS_")}
    env["HTTP_PROXY"] = f"http://127.0.0.1:{proxy.server_address[1]}"
    args = [
        "credential-process",
        "--certificate", str(files.certificate), "--private-key", str(files.key),
        "--trust-anchor-arn", server.trust_anchor_arn, "--profile-arn", server.profile_arn,
        "--role-arn", server.role_arn, "--endpoint", server.url, *extra,
    ]
    return run_cli(*args, env=env)


def test_the_request_goes_through_the_proxy_from_the_environment(
    server: Emulator, proxy: ForwardingProxy, leaf_files: dict[str, Any]
) -> None:
    result = run(server, leaf_files["p256"], proxy)
    assert result.returncode == 0, result.stderr
    assert len(proxy.forwarded) == 1 and proxy.forwarded[0].startswith(f"{server.url}/sessions?")
    assert len(server.issued) == 1  # the signature survived the proxy hop


def test_no_proxy_flag_goes_direct(server: Emulator, proxy: ForwardingProxy, leaf_files: dict[str, Any]) -> None:
    result = run(server, leaf_files["p256"], proxy, "--no-proxy")
    assert result.returncode == 0, result.stderr
    assert proxy.forwarded == []
    assert len(server.issued) == 1


def test_a_proxy_that_applies_puts_the_client_on_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard-library path is never chosen when a proxy applies; the httpx one is."""
    from rolesanywhere_hsm.client import RolesAnywhereClient

    for name in [n for n in os.environ if n.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)
    endpoint = "https://rolesanywhere.eu-west-1.amazonaws.com"
    with RolesAnywhereClient("eu-west-1", endpoint=endpoint) as client:
        assert client.http_client == "direct"
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    with RolesAnywhereClient("eu-west-1", endpoint=endpoint) as client:
        assert client.http_client == "httpx"
    with RolesAnywhereClient("eu-west-1", endpoint=endpoint, trust_env=False) as client:  # --no-proxy
        assert client.http_client == "direct"
    monkeypatch.setenv("NO_PROXY", ".amazonaws.com")
    with RolesAnywhereClient("eu-west-1", endpoint=endpoint) as client:
        assert client.http_client == "direct"
    monkeypatch.setenv("NO_PROXY", "rolesanywhere.eu-west-1.amazonaws.com:443")  # a form left to httpx
    with RolesAnywhereClient("eu-west-1", endpoint=endpoint) as client:
        assert client.http_client == "httpx"


def test_the_cli_sends_through_httpx_when_the_proxy_applies_and_directly_without(
    server: Emulator, proxy: ForwardingProxy, leaf_files: dict[str, Any]
) -> None:
    result = run(server, leaf_files["p256"], proxy, "--debug")
    assert result.returncode == 0, result.stderr
    assert "sending with the httpx path" in result.stderr and len(proxy.forwarded) == 1
    result = run(server, leaf_files["p256"], proxy, "--debug", "--no-proxy")
    assert result.returncode == 0, result.stderr
    assert "sending with the direct path" in result.stderr and len(proxy.forwarded) == 1
