"""`dev-ca init` and `dev-ca sign`, the TEST CA of the offline onboarding (docs/onboarding.md):
the files it writes and their modes, what it refuses, and that what it signs is what Roles
Anywhere (the emulator) accepts for a key in a token."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, load_test_ca, new_private_key, save_test_ca, sign_request
from rolesanywhere_hsm.errors import CertificateError, UsageError
from tests.provision.flow import cli

ENV = {"PATH": "/usr/bin:/bin"}


def _request(key: object, *names: str) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "workload-1")]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                                        critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)  # type: ignore[arg-type]


def test_init_writes_the_key_0600_in_a_0700_directory_and_never_overwrites(tmp_path: Path) -> None:
    import os
    import sys

    env = dict(ENV, PYTHONPATH=os.environ.get("PYTHONPATH", ""), HOME=str(tmp_path))
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    result = cli(env, "dev-ca", "init", str(tmp_path / "ca"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "ca" / "ca.pem"), str(tmp_path / "ca" / "ca.key")]
    assert "TEST CA" in result.stderr
    assert stat.S_IMODE((tmp_path / "ca").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600
    key_before = (tmp_path / "ca" / "ca.key").read_bytes()
    again = cli(env, "dev-ca", "init", str(tmp_path / "ca"))
    assert again.returncode == 2 and "already holds a test CA" in again.stderr
    assert (tmp_path / "ca" / "ca.key").read_bytes() == key_before
    help_text = cli(env, "dev-ca", "--help").stdout
    assert "TEST" in help_text and "never" in help_text


def test_sign_makes_an_end_entity_certificate_with_the_requests_names(tmp_path: Path) -> None:
    save_test_ca(CertificateAuthority.create("Docs TEST CA"), tmp_path / "ca")
    ca = load_test_ca(tmp_path / "ca")
    key = new_private_key("p256")
    cert = sign_request(ca, _request(key, "workload-1.example"), days=30)
    assert cert.subject.rfc4514_string() == "CN=workload-1"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["workload-1.example"]
    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(ca.certificate)
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days in (30, 31)


def test_sign_refuses_a_request_its_key_did_not_sign_and_garbage(tmp_path: Path) -> None:
    ca = CertificateAuthority.create("Docs TEST CA")
    good = x509.load_pem_x509_csr(_request(new_private_key("p256")))
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature
    with pytest.raises(CertificateError, match="does not verify"):
        sign_request(ca, bytes(der))
    with pytest.raises(CertificateError, match="cannot be read"):
        sign_request(ca, b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n")
    with pytest.raises(UsageError, match="out of range"):
        sign_request(ca, _request(new_private_key("p256")), days=0)
    with pytest.raises(UsageError, match="holds no test CA"):
        load_test_ca(tmp_path / "none")
