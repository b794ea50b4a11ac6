"""`csr` with key files, and the pure parts of the request: subject, SANs, the DER. Every
request is parsed and its signature verified by `cryptography`, not by the code under test."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from rolesanywhere_hsm.errors import KeyLoadError, UsageError
from rolesanywhere_hsm.provision.csr import SubjectAltName, make_csr, parse_sans, parse_subject, to_pem
from tests.fixtures.pki import LeafFiles
from tests.clirunner import run_cli

ROOT = Path(__file__).parents[2]


def test_subject_is_parsed_as_rfc4514() -> None:
    name = x509.Name.from_rfc4514_string("CN=workload\\, one,O=Example Corp,C=DE")
    assert parse_subject("CN=workload\\, one,O=Example Corp,C=DE") == name.public_bytes()
    assert name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "workload, one"


@pytest.mark.parametrize("text", ["", "   ", "workload", "XX=1", "CN"])
def test_bad_subjects_are_refused(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_subject(text)
    assert "--subject" in caught.value.diagnostics()


def test_sans_comma_separated_and_repeated() -> None:
    assert parse_sans(["dns:a.example,uri:spiffe://example/w", "email:me@example.com", "ip:2001:db8::1"]) == [
        SubjectAltName("dns", "a.example"), SubjectAltName("uri", "spiffe://example/w"),
        SubjectAltName("email", "me@example.com"), SubjectAltName("ip", "2001:db8::1"),
    ]


@pytest.mark.parametrize("value", ["a.example", "dns:", "ftp:x", "ip:300.1.1.1", "mail:me@x"])
def test_bad_sans_are_refused(value: str) -> None:
    with pytest.raises(UsageError):
        parse_sans([value])


@pytest.mark.parametrize(("value", "expected"), [
    ("ip:fe80::1%eth0", "has a zone index"),
    ("email:\u00e9@example.com", "non-ASCII characters before the @"),
    ("dns:" + "a" * 70 + ".example.com", "DNS label longer than 63"),
    ("dns:" + ".".join(["a" * 60] * 5), "longer than the 253 characters"),
    ("dns:b\u00fccher..example", "cannot be written in a certificate"),  # an empty label
])
def test_sans_a_certificate_cannot_hold_are_usage_errors(value: str, expected: str) -> None:
    with pytest.raises(UsageError, match=expected) as caught:
        parse_sans([value])
    assert "\n" not in caught.value.message


def test_cli_sans_a_certificate_cannot_hold_are_one_line_and_exit_2(leaf_files: dict[str, LeafFiles]) -> None:
    key = str(leaf_files["p256"].key)
    for value in ("ip:fe80::1%eth0", "email:\u00e9@example.com", "dns:" + "a" * 70 + ".example.com"):
        result = run_csr("--private-key", key, "--subject", "CN=x", "--san", value)
        assert result.returncode == 2 and result.stdout == "", result.stderr
        assert result.stderr.startswith("rolesanywhere-hsm: --san") and "Traceback" not in result.stderr
        assert "internal error" not in result.stderr


@pytest.mark.parametrize("kind", ["rsa2048", "p256", "p384"])
def test_csr_from_a_key_file_verifies(kind: str, leaf_files: dict[str, LeafFiles]) -> None:
    der = make_csr(str(leaf_files[kind].key), "CN=workload-1,O=Example", ["dns:w.example,ip:192.0.2.1"])
    request = x509.load_der_x509_csr(der)
    assert request.is_signature_valid
    assert request.public_key() == leaf_files[kind].private_key.public_key()
    assert request.subject.rfc4514_string() == "CN=workload-1,O=Example"
    sans = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["w.example"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.1")]
    assert request.signature_hash_algorithm.name == "sha256"


def test_encrypted_key_file_uses_the_password(tmp_path: Path, leaf_files: dict[str, LeafFiles]) -> None:
    key = leaf_files["p256"].private_key
    path = tmp_path / "enc.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"s3cret")))
    request = x509.load_der_x509_csr(make_csr(str(path), "CN=x", pkcs8_password="s3cret"))
    assert request.is_signature_valid
    with pytest.raises(KeyLoadError, match="wrong password"):
        make_csr(str(path), "CN=x", pkcs8_password="wrong")
    asked: list[str] = []
    make_csr(str(path), "CN=x", prompt=lambda what: asked.append(what) or "s3cret")
    assert asked == [f"Password for {path}"]


def test_ml_dsa_key_file(tmp_path: Path) -> None:
    mldsa = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.mldsa")
    from asn1crypto import csr as asn1_csr

    key = mldsa.MLDSA65PrivateKey.generate()
    path = tmp_path / "mldsa.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    request = asn1_csr.CertificationRequest.load(make_csr(str(path), "CN=pq"))
    assert request["signature_algorithm"]["algorithm"].dotted == "2.16.840.1.101.3.4.3.18"
    # cryptography 48 cannot verify an ML-DSA CSR itself: verify the signature directly.
    key.public_key().verify(bytes(request["signature"]), request["certification_request_info"].dump())
    assert serialization.load_der_public_key(
        request["certification_request_info"]["subject_pk_info"].dump()) == key.public_key()


def test_pem_armour_round_trips(leaf_files: dict[str, LeafFiles]) -> None:
    der = make_csr(str(leaf_files["p256"].key), "CN=x")
    pem = to_pem(der)
    assert pem.startswith("-----BEGIN CERTIFICATE REQUEST-----\n")
    assert x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER) == der


def run_csr(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("csr", *args, cwd=ROOT)


def test_cli_writes_pem_to_stdout_or_out_file(tmp_path: Path, leaf_files: dict[str, LeafFiles]) -> None:
    key = str(leaf_files["p256"].key)
    result = run_csr("--private-key", key, "--subject", "CN=cli", "--san", "dns:cli.example")
    assert result.returncode == 0, result.stderr
    assert x509.load_pem_x509_csr(result.stdout.encode()).is_signature_valid
    out = tmp_path / "req.pem"
    result = run_csr("--private-key", key, "--subject", "CN=cli", "--out", str(out))
    assert result.returncode == 0 and result.stdout == ""
    assert x509.load_pem_x509_csr(out.read_bytes()).subject.rfc4514_string() == "CN=cli"
    assert out.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["req.pem"]  # no temp file left


def test_cli_bad_subject_is_one_line_and_exit_2(leaf_files: dict[str, LeafFiles]) -> None:
    result = run_csr("--private-key", str(leaf_files["p256"].key), "--subject", "not a name")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("rolesanywhere-hsm: --subject") and "Traceback" not in result.stderr


def test_ec_requests_can_be_signed_with_sha384(leaf_files: dict[str, LeafFiles]) -> None:
    request = x509.load_der_x509_csr(make_csr(str(leaf_files["p384"].key), "CN=x", digest="sha384"))
    assert request.is_signature_valid and request.signature_hash_algorithm.name == "sha384"
    with pytest.raises(UsageError, match="EC keys only"):
        make_csr(str(leaf_files["rsa2048"].key), "CN=x", digest="sha384")
    with pytest.raises(UsageError, match="not offered"):
        make_csr(str(leaf_files["p256"].key), "CN=x", digest="sha1")
