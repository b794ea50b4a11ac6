"""The proxy decision (rolesanywhere_hsm.proxyenv) against httpx's own, over many environments.

httpx is the oracle: a client is made with the environment, and its transport for the
endpoint's URL is either its direct one or a proxy's. Ours may say "httpx" where httpx would go
direct (doubt costs only time), never the other way round; on the forms it mirrors (plain
names, IPv4 addresses, `*`, `.suffix`, plain proxy URLs) the two answers are the same.
"""

from __future__ import annotations

import os
from unittest import mock

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rolesanywhere_hsm.directhttp import parse_endpoint
from rolesanywhere_hsm.proxyenv import environment_proxies, goes_direct

HOSTS = ["example.com", "www.example.com", "a.b.example.com", "examplexcom", "rolesanywhere.us-east-1.amazonaws.com",
         "127.0.0.1", "10.0.0.0", "10.1.2.3", "localhost", "internal", "my-host.internal"]
MIRRORED_ENTRIES = ["*", ".example.com", "example.com", "EXAMPLE.com", "127.0.0.1", "10.0.0.0/8", "10.1.2.3",
                    "localhost", "LocalHost", "::1", "amazonaws.com", ".amazonaws.com", "0.0.1", "internal",
                    ".internal", "", " ", "com", "x.example.com"]
OTHER_ENTRIES = ["example.com:443", "http://example.com", "*.example.com", "exa mple.com", "example.com.",
                 "[::1]", "::1/128", "*example.com", "127.0.0.1:8080", "https://", "a..b", "ex_ample.com",
                 "10.0.0.0/abc", "héllo.example"]
MIRRORED_PROXIES = ["http://proxy:3128", "proxy:3128", "https://proxy", "http://10.9.9.9:8080/", "HTTP://Proxy:1"]
OTHER_PROXIES = ["socks5://proxy:1080", "http://user:pw@proxy:3128", "ftp://proxy", "http://proxy:99999",
                 "http://[::1]:3128", "://", "http://proxy/path"]
NAMES = ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "Http_Proxy",
         "FTP_PROXY"]


def httpx_goes_direct(url: str, environ: dict[str, str], trust_env: bool) -> bool:
    """httpx's answer: its client for this environment sends to `url` with no proxy (and could
    be made at all)."""
    with mock.patch.dict(os.environ, environ, clear=True):
        try:
            client = httpx.Client(trust_env=trust_env, verify=False)  # no CA bundle to load
        except Exception:  # noqa: BLE001 (a proxy setting httpx refuses: not direct)
            return False
    try:
        return client._transport_for_url(httpx.URL(url)) is client._transport
    finally:
        client.close()


def ours(url: str, environ: dict[str, str], trust_env: bool) -> bool:
    parsed = parse_endpoint(url)
    assert parsed is not None
    return goes_direct(parsed[0], parsed[1], environ, trust_env=trust_env)


@st.composite
def environments(draw: st.DrawFn, mirrored_only: bool) -> dict[str, str]:
    entries = MIRRORED_ENTRIES if mirrored_only else MIRRORED_ENTRIES + OTHER_ENTRIES
    proxies = MIRRORED_PROXIES if mirrored_only else MIRRORED_PROXIES + OTHER_PROXIES
    environ: dict[str, str] = {}
    for name in draw(st.lists(st.sampled_from(NAMES), max_size=3)):
        environ[name] = draw(st.sampled_from([*proxies, ""]))
    if draw(st.booleans()):
        name = draw(st.sampled_from(["NO_PROXY", "no_proxy", "No_Proxy"]))
        environ[name] = ",".join(draw(st.lists(st.sampled_from(entries), min_size=1, max_size=4)))
    if draw(st.integers(0, 9)) == 0:
        environ["REQUEST_METHOD"] = "GET"
    return environ


# Twice the profile's count: 200 in the whole suite, 50 in the fast tier (tests/conftest.py).
EXAMPLES = 2 * settings.default.max_examples

@settings(max_examples=EXAMPLES, deadline=None)
@given(st.sampled_from(HOSTS), st.sampled_from(["http", "https"]), st.sampled_from(["", ":8443"]),
       environments(mirrored_only=True), st.booleans())
def test_on_the_forms_it_mirrors_the_decision_is_httpxs(host: str, scheme: str, port: str,
                                                          environ: dict[str, str], trust_env: bool) -> None:
    url = f"{scheme}://{host}{port}"
    assert ours(url, environ, trust_env) == httpx_goes_direct(url, environ, trust_env), (url, environ)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.sampled_from(HOSTS), st.sampled_from(["http", "https"]), environments(mirrored_only=False),
       st.booleans())
def test_it_never_goes_direct_where_httpx_would_not(host: str, scheme: str, environ: dict[str, str],
                                                     trust_env: bool) -> None:
    url = f"{scheme}://{host}"
    if ours(url, environ, trust_env):
        assert httpx_goes_direct(url, environ, trust_env), (url, environ)


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, True),
    ({"HTTPS_PROXY": "http://proxy:3128"}, False),
    ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "*"}, True),
    ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": ".amazonaws.com"}, True),
    ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "amazonaws.com:443"}, False),  # left to httpx
    ({"HTTP_PROXY": "http://proxy:3128"}, True),  # an http proxy does not apply to https
    ({"ALL_PROXY": "http://proxy:3128"}, False),
    ({"https_proxy": "", "HTTPS_PROXY": "http://proxy:3128"}, True),  # the empty lower-case one wins
])
def test_examples(environ: dict[str, str], expected: bool) -> None:
    url = "https://rolesanywhere.eu-west-1.amazonaws.com"
    assert ours(url, environ, True) is expected
    assert httpx_goes_direct(url, environ, True) is expected


def test_the_proxy_variables_are_read_as_urllib_reads_them() -> None:
    import urllib.request

    environ = {"HTTP_PROXY": "a", "http_proxy": "b", "HTTPS_PROXY": "c", "https_proxy": "", "No_Proxy": "x",
               "REQUEST_METHOD": "GET", "FTP_PROXY": "f"}
    with mock.patch.dict(os.environ, environ, clear=True):
        assert environment_proxies(environ) == urllib.request.getproxies_environment()


def test_other_platforms_and_an_untrusted_environment() -> None:
    assert not goes_direct("https", "example.com", {}, platform="darwin")
    assert goes_direct("https", "example.com", {"HTTPS_PROXY": "http://p:1"}, trust_env=False, platform="darwin")
