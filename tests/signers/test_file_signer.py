"""The file signer: every key format users have, signatures checked with the certificate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from rolesanywhere_hsm._dev.devpki import (
    KEY_KINDS,
    CertificateAuthority,
    write_pem,
)
from rolesanywhere_hsm.errors import CertificateError, KeyLoadError, UsageError
from rolesanywhere_hsm.signers import (
    ALGORITHM_ECDSA,
    ALGORITHM_RSA,
    SignerConfig,
    load_signer,
)
from tests.signatures import verify_signature

MESSAGE = b"AWS4-X509-RSA-SHA256\n20260116T000243Z\n..."


def verify(cert: Any, signature: bytes, message: bytes = MESSAGE) -> None:
    verify_signature(cert, message, signature)


# RSA-3072/4096: the session's first user generates the key (seconds).
@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k in ("rsa3072", "rsa4096") else k
                                  for k in KEY_KINDS])
def test_every_key_kind_signs_in_wire_encoding(kind: str, leaf_files: dict[str, Any]) -> None:
    files = leaf_files[kind]
    with load_signer(SignerConfig(str(files.certificate), str(files.key))) as signer:
        assert signer.algorithm == (ALGORITHM_RSA if kind.startswith("rsa") else ALGORITHM_ECDSA)
        signature = signer.sign(MESSAGE)
    verify(files.cert, signature)  # DER ECDSA: cryptography rejects raw r||s
    with pytest.raises(InvalidSignature):
        verify(files.cert, signature, MESSAGE + b"x")


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize(
    ("kind", "fmt"),
    [
        ("rsa2048", serialization.PrivateFormat.TraditionalOpenSSL),  # PKCS#1
        ("p256", serialization.PrivateFormat.TraditionalOpenSSL),  # SEC1
        ("p384", serialization.PrivateFormat.PKCS8),
    ],
)
@pytest.mark.parametrize("encoding", [serialization.Encoding.PEM, serialization.Encoding.DER])
def test_pkcs1_sec1_pkcs8_in_pem_and_der(kind: str, fmt: Any, encoding: Any, leaf_files: dict[str, Any], tmp_path: Path) -> None:
    files = leaf_files[kind]
    key = _write(tmp_path / "k", files.private_key.private_bytes(encoding, fmt, serialization.NoEncryption()))
    chain = str(files.chain) if files.chain else None
    with load_signer(SignerConfig(str(files.certificate), key, intermediates=chain)) as signer:
        verify(files.cert, signer.sign(MESSAGE))


def test_encrypted_pkcs8_with_password_and_wrong_password(leaf_files: dict[str, Any], tmp_path: Path) -> None:
    files = leaf_files["p256"]
    key = _write(
        tmp_path / "enc.pem",
        files.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"correct horse"),
        ),
    )
    with load_signer(SignerConfig(str(files.certificate), key, pkcs8_password="correct horse")) as signer:
        verify(files.cert, signer.sign(MESSAGE))
    asked: list[str] = []

    def prompt(description: str) -> str:
        asked.append(description)
        return "correct horse"

    with load_signer(SignerConfig(str(files.certificate), key, secret_callback=prompt)) as signer:
        verify(files.cert, signer.sign(MESSAGE))
    assert asked == [f"Password for {key}"]
    with pytest.raises(KeyLoadError, match="wrong password") as info:
        load_signer(SignerConfig(str(files.certificate), key, pkcs8_password="battery staple"))
    assert "battery" not in str(info.value.diagnostics())


def test_pkcs12_bundle_gives_key_certificate_and_chain(
    leaf_files: dict[str, Any], intermediate_ca: CertificateAuthority, tmp_path: Path
) -> None:
    files = leaf_files["p384"]
    p12 = _write(
        tmp_path / "bundle.p12",
        pkcs12.serialize_key_and_certificates(
            b"w", files.private_key, files.cert, [intermediate_ca.certificate],
            serialization.BestAvailableEncryption(b"pw"),
        ),
    )
    with load_signer(SignerConfig(p12, pkcs8_password="pw")) as signer:
        verify(files.cert, signer.sign(MESSAGE))
        assert signer.chain == (intermediate_ca.certificate.public_bytes(serialization.Encoding.DER),)


def test_chain_keeps_only_intermediates_on_the_path(
    leaf_files: dict[str, Any], root_ca: CertificateAuthority, intermediate_ca: CertificateAuthority, tmp_path: Path
) -> None:
    files = leaf_files["p384"]
    stranger = CertificateAuthority.create("Unrelated CA").issue_intermediate("Unrelated Intermediate")
    bundle = write_pem(tmp_path / "bundle.pem", stranger.certificate, root_ca.certificate, intermediate_ca.certificate)
    with load_signer(SignerConfig(str(files.certificate), str(files.key), intermediates=str(bundle))) as signer:
        assert signer.chain == (intermediate_ca.certificate.public_bytes(serialization.Encoding.DER),)


def test_key_that_does_not_match_the_certificate_is_refused(leaf_files: dict[str, Any]) -> None:
    with pytest.raises(KeyLoadError, match="does not belong to the certificate"):
        load_signer(SignerConfig(str(leaf_files["p256"].certificate), str(leaf_files["p384"].key)))


def test_ca_certificate_as_leaf_is_refused(root_ca: CertificateAuthority, tmp_path: Path) -> None:
    cert = write_pem(tmp_path / "ca.crt", root_ca.certificate)
    key = write_pem(tmp_path / "ca.key", root_ca.key)
    with pytest.raises(CertificateError, match="is a CA certificate"):
        load_signer(SignerConfig(str(cert), str(key)))


def test_ed25519_key_is_refused_with_a_reason(root_ca: CertificateAuthority, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    cert = write_pem(tmp_path / "ed.crt", root_ca.issue_leaf(key.public_key(), "ed"))
    keyfile = write_pem(tmp_path / "ed.key", key)
    with pytest.raises(CertificateError, match="does not accept ED25519 keys"):
        load_signer(SignerConfig(str(cert), str(keyfile)))


def test_missing_files_and_missing_key_option(leaf_files: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="Cannot read the certificate file"):
        load_signer(SignerConfig(str(tmp_path / "absent.crt"), str(leaf_files["p256"].key)))
    with pytest.raises(UsageError, match="--private-key is required"):
        load_signer(SignerConfig(str(leaf_files["p256"].certificate)))
    garbage = _write(tmp_path / "garbage.pem", b"hello")
    with pytest.raises(CertificateError, match="not a certificate"):
        load_signer(SignerConfig(garbage, str(leaf_files["p256"].key)))


def test_a_closed_signer_refuses_to_sign(leaf_files: dict[str, Any]) -> None:
    signer = load_signer(SignerConfig(str(leaf_files["p256"].certificate), str(leaf_files["p256"].key)))
    signer.close()
    with pytest.raises(UsageError, match="closed"):
        signer.sign(MESSAGE)


def test_signer_config_repr_hides_passwords_and_pin_values() -> None:
    config = SignerConfig(
        "pkcs11:token=t;object=o?pin-value=9876-secret", "pkcs11:token=t;object=o?pin-value=9876-secret",
        pkcs8_password="hunter2-secret",
    )
    text = repr(config)
    assert "9876-secret" not in text and "hunter2-secret" not in text
    assert "token=t" in text
