"""CLI: `read-certificate-data` and `sign-string`, to check a certificate and a key without AWS.

Drop-ins for the official helper's commands: for files, stdout is byte for byte what
`aws_signing_helper` 1.8.0 prints (compact JSON, no trailing newline; the same fixed test
message; `--digest`, `--format`), so scripts written for it keep working.
"""

from __future__ import annotations

import hashlib
import json
import sys
from enum import Enum
from typing import TYPE_CHECKING, Any

import typer

from rolesanywhere_hsm.cli.compat import check_store_flags
from rolesanywhere_hsm.cli.fast import configure_logging
from rolesanywhere_hsm.cli.table import extra_option, table_command

if TYPE_CHECKING:
    from rolesanywhere_hsm.settings import Settings

# The official helper's fixed message: this text, SIGN_STRING_TEST_VERSION ("1"), then
# SHA-256("IAM RA" || public key bytes). Signing it proves a key works without signing
# anything AWS would accept.
SIGN_STRING_PREFIX = b"AWS Roles Anywhere Credential Helper Signing Test"
SIGN_STRING_TEST_VERSION = 1


class OutputFormat(str, Enum):
    json = "json"
    text = "text"
    bin = "bin"


class Digest(str, Enum):
    SHA256 = "SHA256"
    SHA384 = "SHA384"
    SHA512 = "SHA512"


def public_key_bytes(spki_der: bytes) -> bytes:
    """The public key as the official helper hashes it into the test message: RSA the PKCS#1
    RSAPublicKey DER, EC the uncompressed point 04||X||Y, ML-DSA the raw FIPS 204 public key
    (our choice: the official 1.8.0 adds nothing for key types it does not know)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key = serialization.load_der_public_key(spki_der)
    if isinstance(key, rsa.RSAPublicKey):
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign_string_message(spki_der: bytes) -> bytes:
    """The fixed message `sign-string` signs for the key whose SubjectPublicKeyInfo is given."""
    suffix = hashlib.sha256(b"IAM RA" + public_key_bytes(spki_der)).digest()
    return SIGN_STRING_PREFIX + str(SIGN_STRING_TEST_VERSION).encode() + suffix


def read_certificate_data(settings: Settings) -> None:
    """Print the certificate's key type, DER (base64), serial and algorithms as compact JSON."""
    configure_logging(settings["debug"])
    check_store_flags(settings["system-store-name"], settings["system-store-location"])
    from rolesanywhere_hsm.keysource import KeySource

    source = KeySource.from_settings(settings)
    certificate, pkcs11_lib, selector = source.certificate, source.pkcs11_lib, source.selector
    from rolesanywhere_hsm.x509 import certificate_data, load_certificates

    if selector is not None and (certificate is None or certificate.lower().startswith("pkcs11:")):
        from rolesanywhere_hsm.signers.base import SignerConfig
        from rolesanywhere_hsm.signers.pkcs11 import selected_certificate

        der = selected_certificate(SignerConfig.from_source(source))
        sys.stdout.write(json.dumps(certificate_data(der), separators=(",", ":")))
        sys.stdout.flush()
        return
    assert certificate is not None
    if certificate.lower().startswith("pkcs11:"):
        from rolesanywhere_hsm.signers.pkcs11 import list_certificates

        print(json.dumps(list_certificates(certificate, pkcs11_lib, require_match=True), indent=2))
        return
    certificates = load_certificates(certificate)
    der = certificates[0]
    if selector is not None:
        from rolesanywhere_hsm.certselector import candidate_from_der, select_certificate

        der = certificates[
            select_certificate(
                [candidate_from_der(c) for c in certificates], selector,
                use_latest_expiring=source.use_latest_expiring_certificate,
                where=certificate,
            )
        ]
    sys.stdout.write(json.dumps(certificate_data(der), separators=(",", ":")))
    sys.stdout.flush()


def _sign(config: Any, digest: str) -> tuple[bytes, bytes]:
    """(signature, public key SPKI) over the fixed message, with the key `config` names."""
    from rolesanywhere_hsm.signers.base import load_signer
    from rolesanywhere_hsm.x509 import certificate_info

    if not config.certificate and config.cert_selector is None and not (
            config.private_key or "").lower().startswith("pkcs11:"):  # a key file alone
        from cryptography.hazmat.primitives import serialization

        from rolesanywhere_hsm.signers.file import load_key_only, signing_function

        key = load_key_only(config)
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return signing_function(key, digest)(sign_string_message(spki)), spki
    with load_signer(config) as signer:
        info = certificate_info(signer.certificate)
        spki = info.public_key_info
        message = sign_string_message(spki)
        if digest == "SHA256" or info.key_type == "ML-DSA":
            return signer.sign(message), spki
        sign_with_digest = getattr(signer, "sign_with_digest", None)
        if sign_with_digest is None:
            from rolesanywhere_hsm.errors import UsageError

            raise UsageError(
                f"--digest {digest} is not supported with this key store (only SHA256).",
                hint="Roles Anywhere itself signs with SHA256; run again without --digest.",
            )
        return sign_with_digest(message, digest), spki


def sign_string(settings: Settings, *, output_format: OutputFormat = OutputFormat.json,
                digest: Digest = Digest.SHA256) -> None:
    """Sign the official helper's fixed test message with the key and print the signature.

    The message is "AWS Roles Anywhere Credential Helper Signing Test", then "1", then
    SHA-256("IAM RA" || public key). RSA signatures are deterministic, so the output can be
    compared with the official helper's."""
    configure_logging(settings["debug"])
    check_store_flags(settings["system-store-name"], settings["system-store-location"])
    from rolesanywhere_hsm.errors import UsageError
    from rolesanywhere_hsm.keysource import KeySource
    from rolesanywhere_hsm.signers.base import SignerConfig

    fields = KeySource.from_settings(settings).fields()
    source = KeySource(**{**fields, "certificate": fields["certificate"] or None})
    if not source.certificate and not source.private_key and source.selector is None:
        raise UsageError("Give --private-key (a file or a pkcs11: URI), --certificate or --cert-selector.",
                         hint="sign-string signs a fixed message with that key.")
    config = SignerConfig.from_source(
        source, pkcs8_password=settings["pkcs8-password"], tpm_key_password=settings["tpm-key-password"],
        check_dates=False,  # a test of the key; nothing goes to the service
    )
    signature, _spki = _sign(config, digest.value)
    if output_format is OutputFormat.bin:
        sys.stdout.buffer.write(signature)
        sys.stdout.buffer.flush()
    elif output_format is OutputFormat.text:
        sys.stdout.write(signature.hex())
    else:
        sys.stdout.write(json.dumps(signature.hex()))
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("read-certificate-data")(table_command("read-certificate-data", read_certificate_data))
    app.command("sign-string")(table_command("sign-string", sign_string, extra=[
        extra_option("output_format", OutputFormat, OutputFormat.json, "--format",
                     help="json (a JSON string of hex), text (hex) or bin (raw bytes)."),
        extra_option("digest", Digest, Digest.SHA256, "--digest",
                     help="Hash of the signature (RSA, EC); ML-DSA signs the message itself."),
    ]))
