"""Shared pieces of the emulator tests: keys made once per session (RSA is slow), a way to
re-sign a certificate with SHA-1 (cryptography >= 48 refuses to), and the call that sends an
oracle-signed request and returns the answer."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import pytest
from asn1crypto import algos as asn1_algos
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from rolesanywhere_hsm._dev.devpki import CertificateAuthority
from rolesanywhere_hsm.emulator import Emulator
from tests.oracle import SignedRequest, sign_create_session


@pytest.fixture(scope="session")
def key_of(file_keys: Mapping[str, Any]) -> Callable[[str], Any]:
    """key_of("rsa2048") -> the session's one key of that kind (tests/fixtures/pki.py's
    `file_keys`), made on first use."""
    return file_keys.__getitem__


@pytest.fixture(scope="session")
def p256_key(key_of: Callable[[str], Any]) -> Any:
    return key_of("p256")


@pytest.fixture(scope="session")
def leaf(root_ca: CertificateAuthority, p256_key: Any) -> x509.Certificate:
    """A good leaf straight under the root."""
    return root_ca.issue_leaf(p256_key.public_key(), "workload-1")


def sign(emulator: Emulator, key: Any, certificate: x509.Certificate, **kwargs: Any) -> SignedRequest:
    kwargs.setdefault("region", emulator.region)
    kwargs.setdefault("trust_anchor_arn", emulator.trust_anchor_arn)
    kwargs.setdefault("profile_arn", emulator.profile_arn)
    kwargs.setdefault("role_arn", emulator.role_arn)
    return sign_create_session(emulator.url, key, certificate, **kwargs)


# Building an SSL context costs ~60 ms (CA bundle load); httpx builds one per call unless given.
_UNUSED_TLS_CONTEXT = ssl.create_default_context()


def send(signed: SignedRequest, **changes: Any) -> httpx.Response:
    """POST a signed request; `changes` replace url, headers or body after signing."""
    return httpx.post(
        changes.get("url", signed.url),
        content=changes.get("body", signed.body),
        headers=changes.get("headers", signed.headers),
        verify=_UNUSED_TLS_CONTEXT,
    )


def create_session(emulator: Emulator, key: Any, certificate: x509.Certificate, **kwargs: Any) -> httpx.Response:
    return send(sign(emulator, key, certificate, **kwargs))


def assert_refused(response: httpx.Response, status: int, error_type: str, message: str) -> None:
    assert response.status_code == status, (response.status_code, response.text,
                                            response.headers.get("x-rah-emulator-detail"))
    assert response.headers["x-amzn-errortype"] == error_type
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"message": message}


def resign_with_sha1(certificate: x509.Certificate, ca: CertificateAuthority) -> x509.Certificate:
    """The same certificate, signed by `ca` (an EC CA) with ECDSA-with-SHA1."""
    cert = asn1_x509.Certificate.load(certificate.public_bytes(Encoding.DER))
    algorithm = asn1_algos.SignedDigestAlgorithm({"algorithm": "sha1_ecdsa"})
    tbs = cert["tbs_certificate"]
    tbs["signature"] = algorithm
    cert["tbs_certificate"] = tbs
    cert["signature_algorithm"] = asn1_algos.SignedDigestAlgorithm({"algorithm": "sha1_ecdsa"})
    cert["signature_value"] = ca.key.sign(tbs.dump(force=True), ec.ECDSA(hashes.SHA1()))
    return x509.load_der_x509_certificate(cert.dump(force=True))
