"""The onboarding path as a user runs it (keygen, csr, a CA signs, import-certificate,
credential-process), in-process through the console script's main with no terminal, plus an independent look at the token
through python-pkcs11 (not through the code under test)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, write_pem
from rolesanywhere_hsm.emulator import Emulator
from tests.clirunner import run_cli

ROOT = Path(__file__).parents[2]

__all__ = ["Onboarded", "cli", "credential_process", "key_attributes", "object_count", "onboard"]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, cwd=ROOT)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@dataclass(frozen=True)
class Onboarded:
    key_uri: str
    certificate_uri: str
    certificate: x509.Certificate
    request: x509.CertificateSigningRequest


def onboard(env: dict[str, str], token: str, key_type: str, label: str, ca: CertificateAuthority,
            directory: Path) -> Onboarded:
    """keygen -> csr -> `ca` signs -> import-certificate, each a CLI run; returns the URIs."""
    key_uri = ok(cli(env, "keygen", "--token", token, "--key-type", key_type, "--label", label))
    assert key_uri.startswith("pkcs11:") and "module-path=" in key_uri
    request_path = directory / f"{label}.csr"
    ok(cli(env, "csr", "--private-key", key_uri, "--subject", f"CN={label},O=Onboarding",
           "--san", f"dns:{label}.example", "--out", str(request_path)))
    request = x509.load_pem_x509_csr(request_path.read_bytes())
    assert request.is_signature_valid
    certificate = ca.issue_leaf(request.public_key(), label)
    cert_path = write_pem(directory / f"{label}.crt", certificate)
    certificate_uri = ok(cli(env, "import-certificate", "--private-key", key_uri,
                             "--certificate", str(cert_path)))
    return Onboarded(key_uri, certificate_uri, certificate, request)


def credential_process(env: dict[str, str], server: Emulator, certificate_uri: str) -> dict[str, Any]:
    result = cli(env, "credential-process", "--certificate", certificate_uri,
                 "--trust-anchor-arn", server.trust_anchor_arn, "--profile-arn", server.profile_arn,
                 "--role-arn", server.role_arn, "--endpoint", server.url)
    return json.loads(ok(result))


def _logged_in(lib: Any, token_label: str, pin: str) -> Any:
    return lib.get_token(token_label=token_label).open(user_pin=pin)


def key_attributes(lib: Any, token_label: str, pin: str, key_id: bytes) -> dict[str, Any]:
    """The private key's policy attributes as the token reports them."""
    from pkcs11 import Attribute, ObjectClass

    with _logged_in(lib, token_label, pin) as session:
        (key,) = session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: key_id})
        names = ("TOKEN", "PRIVATE", "SENSITIVE", "EXTRACTABLE", "NEVER_EXTRACTABLE", "ALWAYS_SENSITIVE",
                 "SIGN", "DECRYPT", "UNWRAP", "LABEL")
        values = {name: key[getattr(Attribute, name)] for name in names}
        publics = list(session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: key_id}))
        values["public keys"] = len(publics)
        certs = list(session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.ID: key_id}))
        values["certificates"] = [bytes(c[Attribute.VALUE]) for c in certs]
        values["certificate labels"] = [c[Attribute.LABEL] for c in certs]
    return values


def object_count(lib: Any, token_label: str, pin: str) -> int:
    with _logged_in(lib, token_label, pin) as session:
        return len(list(session.get_objects()))


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)
