"""Both HTTP paths send the same signed request: one CreateSession through each, with the same
clock and an RSA key (PKCS#1 v1.5 signatures are deterministic), arrives at the emulator with
byte-identical signed headers, query and body."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from rolesanywhere_hsm._dev.devpki import CertificateAuthority
from rolesanywhere_hsm.arn import validate_session_arns
from rolesanywhere_hsm.client import RolesAnywhereClient
from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
from rolesanywhere_hsm.signers import SignerConfig, load_signer

SIGNED = ("content-type", "host", "x-amz-date", "x-amz-x509", "x-amz-x509-chain", "authorization")


@pytest.fixture
def server(root_ca: CertificateAuthority) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig.for_certificates([root_ca.certificate])) as emulator:
        yield emulator


def test_both_paths_send_the_same_signed_request(server: Emulator, leaf_files: dict[str, Any]) -> None:
    files = leaf_files["rsa2048"]
    arns = validate_session_arns(server.trust_anchor_arn, server.profile_arn, server.role_arn)
    sent = {}
    # One instant for both requests, taken now: the emulator refuses a date more than 5 minutes
    # off (taken at import, it was stale when the suite reached this test late).
    when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    with load_signer(SignerConfig(str(files.certificate), str(files.key),
                                  intermediates=str(files.chain) if files.chain else None)) as signer:
        for path in ("auto", "httpx"):
            with RolesAnywhereClient(server.region, endpoint=server.url, clock=lambda: when, trust_env=False,
                                     http_client=path) as client:
                client.create_session(signer, arns, role_session_name=None)
                sent[client.http_client] = server.last_request
    direct, httpx_ = sent["direct"], sent["httpx"]
    assert [r.status for r in server.requests] == [201, 201]
    for name in SIGNED:
        assert direct.header(name) == httpx_.header(name), name
    assert direct.header("authorization")
    assert (direct.method, direct.path, direct.raw_query, direct.body) == \
        (httpx_.method, httpx_.path, httpx_.raw_query, httpx_.body)
    assert direct.header("user-agent") == httpx_.header("user-agent") == "rolesanywhere-hsm/0.1"
    assert direct.header("accept-encoding") == httpx_.header("accept-encoding") == "identity"
