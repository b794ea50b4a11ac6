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

__all__ = ["Onboarded", "cli", "credential_process", "key_attributes", "object_count", "onboard",
           "try_to_widen_the_key"]


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


def try_to_widen_the_key(lib: Any, token_label: str, pin: str, key_id: bytes) -> dict[str, str]:
    """Try, as any later program with the PIN could, to undo "signing only" with
    C_SetAttributeValue (CKA_DECRYPT, CKA_SIGN, CKA_UNWRAP, CKA_DERIVE) on the private key;
    what each attempt got: "changed" or the PKCS#11 exception's name. The key's attributes are
    read back, so a module that answers OK without changing anything counts as refused."""
    from pkcs11 import Attribute, ObjectClass
    from pkcs11 import exceptions as p11

    wanted = {"DECRYPT": True, "SIGN": False, "UNWRAP": True, "DERIVE": True}
    outcome = {}
    with lib.get_token(token_label=token_label).open(user_pin=pin, rw=True) as session:
        (key,) = session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: key_id})
        for name, value in wanted.items():
            attribute = getattr(Attribute, name)
            try:
                key[attribute] = value
            except p11.PKCS11Error as exc:
                # python-pkcs11 has no class for CKR_ACTION_PROHIBITED (0x1b), SoftHSM's answer
                unmapped = type(exc) is p11.PKCS11Error and str(exc).lower().endswith("0x1b")
                outcome[name] = "ActionProhibited" if unmapped else type(exc).__name__
                continue
            outcome[name] = "changed" if key[attribute] == value else "unchanged"
    return outcome


def object_count(lib: Any, token_label: str, pin: str) -> int:
    with _logged_in(lib, token_label, pin) as session:
        return len(list(session.get_objects()))


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)
