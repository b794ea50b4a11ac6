"""A client that can make no TLS connection does not load a CA bundle (httpx would read
certifi's, about 25 ms of a cold start); every client that may use TLS still verifies."""

from __future__ import annotations

import ssl

import pytest

from rolesanywhere_hsm.client import RolesAnywhereClient, _may_use_tls


def _context(client: RolesAnywhereClient) -> ssl.SSLContext | None:
    if client.http_client == "direct":  # None: a plain-http direct client makes no TLS at all
        return client._path._ssl_context  # type: ignore[no-any-return]
    return client._path._http._transport._pool._ssl_context  # type: ignore[no-any-return]


@pytest.mark.parametrize(("endpoint", "environ", "trust_env", "expected"), [
    ("http://127.0.0.1:8080", {}, True, False),
    ("HTTP://localhost", {"HTTP_PROXY": "http://proxy:3128", "no_proxy": "x"}, True, False),
    ("http://127.0.0.1:8080", {"HTTPS_PROXY": "https://proxy:3128"}, True, True),
    ("http://127.0.0.1:8080", {"all_proxy": " HTTPS://proxy"}, True, True),
    ("http://127.0.0.1:8080", {"HTTPS_PROXY": "https://proxy:3128"}, False, False),
    ("https://rolesanywhere.eu-west-1.amazonaws.com", {}, True, True),
    ("https://127.0.0.1:8443", {}, False, True),
])
def test_which_clients_may_use_tls(endpoint: str, environ: dict[str, str], trust_env: bool, expected: bool,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in __import__("os").environ if n.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert _may_use_tls(endpoint, trust_env) is expected


def test_a_plain_http_client_loads_no_ca_and_would_fail_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in __import__("os").environ if n.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)
    with RolesAnywhereClient("eu-west-1", endpoint="http://127.0.0.1:9") as client:
        context = _context(client)
        if client.http_client == "direct":
            assert context is None
            return
        assert context is not None
        assert context.cert_store_stats()["x509_ca"] == 0
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_an_https_client_still_loads_its_cas() -> None:
    with RolesAnywhereClient("eu-west-1", endpoint="https://127.0.0.1:9") as client:
        context = _context(client)
        assert context is not None
        assert context.cert_store_stats()["x509_ca"] > 0
        assert context.verify_mode == ssl.CERT_REQUIRED
