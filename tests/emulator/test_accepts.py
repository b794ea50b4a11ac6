"""The emulator issues credentials for correctly signed requests, whatever the key type, the
place of the ARNs, and the chain; these requests are signed by the botocore-based oracle."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from rolesanywhere_hsm._dev.devpki import KEY_KINDS, CertificateAuthority
from rolesanywhere_hsm.emulator import Emulator
from tests.emulator.conftest import create_session, sign, send


# RSA-3072 and -4096: seconds of key generation, tenths of a second per signature
@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k in ("rsa3072", "rsa4096") else k
                                  for k in KEY_KINDS])
@pytest.mark.parametrize("with_chain", [False, True], ids=["no-chain", "chain"])
def test_accepts_every_supported_key_type(
    kind: str, with_chain: bool, key_of: Callable[[str], Any], emulator: Emulator,
    root_ca: CertificateAuthority, intermediate_ca: CertificateAuthority,
) -> None:
    key = key_of(kind)
    issuer = intermediate_ca if with_chain else root_ca
    cert = issuer.issue_leaf(key.public_key(), f"{kind}-workload")
    chain = [intermediate_ca.certificate] if with_chain else []

    response = create_session(emulator, key, cert, chain=chain)

    assert response.status_code == 201, response.headers.get("x-rah-emulator-detail")
    assert emulator.last_issued.leaf_serial == cert.serial_number
    expected = "AWS4-X509-RSA-SHA256" if kind.startswith("rsa") else "AWS4-X509-ECDSA-SHA256"
    assert emulator.last_request.header("Authorization").startswith(expected + " ")


@pytest.mark.parametrize("arns_in", ["query", "body"])
def test_accepts_arns_in_query_or_body(arns_in: str, emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    response = create_session(emulator, p256_key, leaf, arns_in=arns_in)

    assert response.status_code == 201
    recorded = emulator.last_request
    assert ("profileArn=" in recorded.raw_query) == (arns_in == "query")
    assert emulator.last_issued.profile_arn == emulator.profile_arn


def test_accepts_a_superset_of_signed_headers(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    response = create_session(
        emulator, p256_key, leaf, extra_headers={"X-Custom-Thing": "two   inner   spaces"}
    )

    assert response.status_code == 201
    assert "x-custom-thing" in emulator.last_request.header("Authorization")


def test_accepts_unsigned_extra_headers(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    signed = sign(emulator, p256_key, leaf)

    response = send(signed, headers={**signed.headers, "User-Agent": "something/1.0", "X-Trace": "1"})

    assert response.status_code == 201


def test_accepts_a_query_encoded_differently_than_canonical(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    # The canonical query is defined on decoded values: ':' and '/' left raw must still match.
    signed = sign(emulator, p256_key, leaf)
    raw_url = signed.url.replace("%3A", ":").replace("%2F", "/")
    assert raw_url != signed.url

    assert send(signed, url=raw_url).status_code == 201


def test_accepts_an_intermediate_registered_as_the_anchor(
    emulator_factory: Callable[..., Emulator], intermediate_ca: CertificateAuthority, p256_key: Any,
) -> None:
    emulator = emulator_factory([intermediate_ca.certificate])
    cert = intermediate_ca.issue_leaf(p256_key.public_key(), "under-intermediate")

    assert create_session(emulator, p256_key, cert).status_code == 201


def test_accepts_a_chain_in_any_order_with_extra_certificates(
    emulator: Emulator, root_ca: CertificateAuthority, p256_key: Any,
) -> None:
    first = root_ca.issue_intermediate("first level", "p256")
    second = first.issue_intermediate("second level", "p256")
    unrelated = root_ca.issue_intermediate("unrelated", "p256")
    cert = second.issue_leaf(p256_key.public_key(), "deep-workload")

    response = create_session(
        emulator, p256_key, cert, chain=[first.certificate, unrelated.certificate, second.certificate]
    )

    assert response.status_code == 201, response.headers.get("x-rah-emulator-detail")


def test_accepts_a_chunked_body(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    import httpx

    signed = sign(emulator, p256_key, leaf, arns_in="body")

    def chunks():  # an iterator makes httpx send Transfer-Encoding: chunked
        yield signed.body[:10]
        yield signed.body[10:]

    response = httpx.post(signed.url, content=chunks(), headers=signed.headers)

    assert response.status_code == 201, response.headers.get("x-rah-emulator-detail")
    assert emulator.last_request.header("Transfer-Encoding") == "chunked"
    assert emulator.last_request.body == signed.body


def test_serves_https(emulator_tls: Emulator, emulator_tls_ca_file: Any, p256_key: Any, leaf: Any) -> None:
    import ssl

    import httpx

    signed = sign(emulator_tls, p256_key, leaf)
    assert signed.url.startswith("https://127.0.0.1:")

    response = httpx.post(signed.url, content=signed.body, headers=signed.headers,
                          verify=ssl.create_default_context(cafile=str(emulator_tls_ca_file)))

    assert response.status_code == 201
