"""CLI: `read-certificate-data` and `sign-string`, to check a certificate and a key without AWS."""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Annotated

import typer

from rolesanywhere_hsm.cli import options as o

# A fixed message, so that two runs (or this tool and another) can be compared.
TEST_MESSAGE = b"rolesanywhere-hsm sign-string test message"


class OutputFormat(str, Enum):
    json = "json"
    text = "text"
    bin = "bin"


class Digest(str, Enum):
    SHA256 = "SHA256"


def read_certificate_data(
    certificate: o.Certificate, pkcs11_lib: o.Pkcs11Lib = None, debug: o.Debug = False
) -> None:
    """Print the certificate's key type, serial and DER (base64) as JSON."""
    o.configure_logging(debug)
    from rolesanywhere_hsm.x509 import certificate_data, load_certificates

    if certificate.lower().startswith("pkcs11:"):
        from rolesanywhere_hsm.signers.pkcs11 import list_certificates

        print(json.dumps(list_certificates(certificate, pkcs11_lib, require_match=True), indent=2))
        return
    print(json.dumps(certificate_data(load_certificates(certificate)[0]), indent=2))


def sign_string(
    certificate: o.Certificate,
    private_key: o.PrivateKey = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="json, text (hex) or bin.")] = OutputFormat.json,
    digest: Annotated[
        Digest, typer.Option("--digest", help="Roles Anywhere signs with SHA256 only, so only SHA256 is offered.")
    ] = Digest.SHA256,
    pkcs8_password: o.Pkcs8Password = None,
    pkcs11_lib: o.Pkcs11Lib = None,
    reuse_pin: o.ReusePin = False,
    debug: o.Debug = False,
) -> None:
    """Sign a fixed test message with the key, as CreateSession would, and print the signature."""
    o.configure_logging(debug)
    from rolesanywhere_hsm.signers.base import SignerConfig, load_signer

    config = SignerConfig(
        certificate=certificate,
        private_key=private_key,
        pkcs8_password=pkcs8_password,
        pkcs11_lib=pkcs11_lib,
        reuse_pin=reuse_pin,
    )
    with load_signer(config) as signer:
        signature = signer.sign(TEST_MESSAGE)
        algorithm = signer.algorithm
    if output_format is OutputFormat.bin:
        sys.stdout.buffer.write(signature)
    elif output_format is OutputFormat.text:
        print(signature.hex())
    else:
        print(json.dumps({"algorithm": algorithm, "digest": digest.value,
                          "message": TEST_MESSAGE.decode(), "signature": signature.hex()}, indent=2))


def register(app: typer.Typer) -> None:
    app.command("read-certificate-data")(read_certificate_data)
    app.command("sign-string")(sign_string)
