"""YubiKey PIV attestation on the virtual card through the real ykcs11 and OpenSC: keygen ->
csr --attest -> verify-attestation --csr, and each way an attestation is refused (an imported
key, another slot's attestation, a tampered one, a PIN policy the CA does not accept, a root
that did not issue the f9 key)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, new_private_key, write_pem
from tests.attestation.conftest import generate
from tests.provision.flow import cli, ok
from tests.tokens.yubikey import VirtualYubiKey

pytestmark = pytest.mark.yubikey

ATTESTATION_OID = x509.ObjectIdentifier("1.3.6.1.4.1.41482.3.1")
INTERMEDIATE_OID = x509.ObjectIdentifier("1.3.6.1.4.1.41482.3.2")


def module_uri(card: VirtualYubiKey, module: str, slot_id: str) -> str:
    """The key's URI as `module` names the card (OpenSC: manufacturer=piv_II)."""
    if module == card.ykcs11_module:
        return f"pkcs11:token=YubiKey%20PIV%20%23{card.serial};id=%{slot_id};type=private"
    return f"pkcs11:manufacturer=piv_II;id=%{slot_id};type=private"


def key_for(card: VirtualYubiKey, module: str, management_key_file: str, key_type: str = "ec-p256") -> tuple[str, str]:
    """(URI, slot name) of a key the card generated, as `module` reaches it. ykcs11: a fresh
    key from keygen in retired slot 82 (id 05). OpenSC shows a retired slot's key only once the
    card's key history lists it, and keygen writes through ykcs11 only: its test takes the
    card's own 9a key (generated on the card, as the card reports)."""
    if module == card.ykcs11_module:
        generate(card, management_key_file, "05", key_type)
        return module_uri(card, module, "05"), "82"
    return module_uri(card, module, "01"), "9a"


def spki(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize(("module", "key_type"), [("ykcs11", "ec-p256"), ("ykcs11", "rsa-2048"), ("opensc", "")])
def test_generated_key_attested_in_the_csr_and_verified(
        card: VirtualYubiKey, module: str, management_key_file: str, key_type: str, tmp_path: Path) -> None:
    piv_module = card.ykcs11_module if module == "ykcs11" else card.opensc_module
    uri, slot = key_for(card, piv_module, management_key_file, key_type)
    env = card.subprocess_env(piv_module, pin=True)
    card.clear_counters()
    request_path = tmp_path / "req.pem"
    ok(cli(env, "csr", "--private-key", uri, "--subject", "CN=attested", "--attest", "--out", str(request_path)))
    request = x509.load_pem_x509_csr(request_path.read_bytes())
    attested = x509.load_der_x509_certificate(request.extensions.get_extension_for_oid(ATTESTATION_OID).value.value)
    f9 = x509.load_der_x509_certificate(request.extensions.get_extension_for_oid(INTERMEDIATE_OID).value.value)
    assert spki(attested.public_key()) == spki(request.public_key())
    assert f9 == card.attestation_certificate

    result = cli(env, "verify-attestation", "--csr", str(request_path), "--roots", str(card.attestation_root_path))
    assert result.returncode == 0, result.stderr
    assert f"serial: {card.serial}" in result.stdout
    assert "pin policy: once" in result.stdout and "touch policy: never" in result.stdout
    assert f"slot: {slot}" in result.stdout and "firmware: 5.4.3" in result.stdout

    result = cli(env, "verify-attestation", "--csr", str(request_path), "--roots", str(card.attestation_root_path),
                 "--json", "--require-pin-policy", "once,always")
    verdict = json.loads(ok(result))
    assert verdict["ok"] is True and verdict["facts"]["serial"] == card.serial
    assert verdict["checks_passed"] == ["chain", "public-key", "policy"]


def test_attest_needs_no_pin_and_writes_leaf_first(card: VirtualYubiKey, piv_module: str,
                                                   management_key_file: str, tmp_path: Path) -> None:
    uri, slot = key_for(card, piv_module, management_key_file)
    env = card.subprocess_env(piv_module, pin=False)  # no PIN anywhere
    card.clear_counters()
    out = tmp_path / "att.pem"
    ok(cli(env, "attest", "--private-key", uri, "--out", str(out)))
    assert card.status()["verify_attempts"] == 0
    leaf, f9 = x509.load_pem_x509_certificates(out.read_bytes())
    assert f9 == card.attestation_certificate
    assert leaf.issuer == f9.subject
    facts = json.loads(ok(cli(env, "attest", "--private-key", uri, "--json")))
    assert facts["kind"] == "yubikey-piv" and facts["facts"]["slot"] == slot


def test_ykcs11_shows_the_attestation_objects(card: VirtualYubiKey, management_key_file: str) -> None:
    """ykcs11 lists the slot's attestation certificate under the key's CKA_ID, and f9's under 0x19."""
    from pkcs11 import Attribute, ObjectClass

    generate(card, management_key_file, "05")
    lib = card.open_library(card.ykcs11_module)
    with lib.get_token(token_label=card.ykcs11_token_label).open() as session:
        labels = {(bytes(c[Attribute.ID]), c[Attribute.LABEL])
                  for c in session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE})}
    card.finalize_in_process()
    assert (b"\x05", "X.509 Certificate for PIV Attestation 82") in labels
    assert (b"\x19", "X.509 Certificate for PIV Attestation") in labels


def test_imported_key_is_refused(card: VirtualYubiKey, piv_module: str, tmp_path: Path) -> None:
    key = new_private_key("p256")
    card.import_key("82", write_pem(tmp_path / "k.pem", key, mode=0o600))
    env = card.subprocess_env(piv_module, pin=True)
    uri = module_uri(card, piv_module, "05")
    for args in (("attest",), ("csr", "--subject", "CN=imported", "--attest")):
        result = cli(env, *args, "--private-key", uri)
        assert result.returncode == 10, result.stderr
        assert result.stdout == ""
        assert "was imported, not generated on the card" in result.stderr
    assert card.status()["verify_attempts"] == 0  # refused before any PIN was sent
    result = cli(env, "attest", "--debug", "--private-key", uri)
    assert "RAH-ATT-002" in result.stderr


def test_another_slots_attestation_is_refused(card: VirtualYubiKey, management_key_file: str,
                                              tmp_path: Path) -> None:
    """A request signed by one key that carries the attestation of another (a client pasting a
    genuine attestation into its request) is refused as a key mismatch."""
    from rolesanywhere_hsm.attestation.collect import collect
    from rolesanywhere_hsm.provision.csr import make_csr, to_pem

    generate(card, management_key_file, "05")
    generate(card, management_key_file, "06")
    env = card.subprocess_env(card.ykcs11_module, pin=True)
    other = collect(module_uri(card, card.ykcs11_module, "06"), pkcs11_lib=card.ykcs11_module, environ=env)
    request = make_csr(module_uri(card, card.ykcs11_module, "05"), "CN=mixed", pkcs11_lib=card.ykcs11_module,
                       environ=env, extra_extensions=other.csr_extensions)
    card.finalize_in_process()
    path = tmp_path / "mixed.csr"
    path.write_text(to_pem(request))
    result = cli(env, "verify-attestation", "--csr", str(path), "--roots", str(card.attestation_root_path))
    assert result.returncode == 10
    assert "is for another key (slot 83) than the public key of the request" in result.stderr
    verdict = json.loads(cli(env, "verify-attestation", "--csr", str(path), "--roots",
                             str(card.attestation_root_path), "--json").stdout)
    assert verdict["ok"] is False and verdict["reason"] == "key-mismatch" and verdict["checks_passed"] == ["chain"]


def test_tampered_attestation_and_foreign_root_are_refused(card: VirtualYubiKey, management_key_file: str,
                                                           tmp_path: Path) -> None:
    uri = generate(card, management_key_file, "05")
    env = card.subprocess_env(card.ykcs11_module, pin=True)
    bundle = tmp_path / "att.pem"
    ok(cli(env, "attest", "--private-key", uri, "--out", str(bundle)))
    leaf, f9 = x509.load_pem_x509_certificates(bundle.read_bytes())
    certificate = CertificateAuthority.create("Some CA").issue_leaf(leaf.public_key(), "w")
    cert_path = write_pem(tmp_path / "leaf.pem", certificate)
    roots = str(card.attestation_root_path)
    ok(cli(env, "verify-attestation", "--attestation", str(bundle), "--certificate", str(cert_path), "--roots", roots))

    # The serial (DER INTEGER 31415926 = 01 DF 5E 76) changed to another card's.
    der = leaf.public_bytes(serialization.Encoding.DER)
    serial = bytes.fromhex("020401DF5E76")
    assert der.count(serial) == 1
    tampered = x509.load_der_x509_certificate(der.replace(serial, bytes.fromhex("020401DF5E77")))
    tampered_path = write_pem(tmp_path / "tampered.pem", tampered, f9)
    result = cli(env, "verify-attestation", "--attestation", str(tampered_path), "--certificate", str(cert_path),
                 "--roots", roots)
    assert result.returncode == 10
    assert "does not verify with the key of its issuer" in result.stderr and "altered or forged" in result.stderr

    foreign = write_pem(tmp_path / "foreign.pem", CertificateAuthority.create("Not Yubico").certificate)
    result = cli(env, "verify-attestation", "--attestation", str(bundle), "--certificate", str(cert_path),
                 "--roots", str(foreign))
    assert result.returncode == 10 and "does not chain to the given roots" in result.stderr

    result = cli(env, "verify-attestation", "--attestation", str(bundle), "--certificate", str(cert_path),
                 "--roots", roots, "--require-pin-policy", "always")
    assert result.returncode == 10
    assert "PIN policy is once; the CA requires always" in result.stderr


def test_tokens_login_shows_the_auditors_attributes(card: VirtualYubiKey, management_key_file: str) -> None:
    """tokens --login: each private key's CKA_SENSITIVE ... CKA_LOCAL, and whether ykcs11 shows
    an attestation certificate for it (it does for the card's generated keys)."""
    generate(card, management_key_file, "05")
    env = card.subprocess_env(card.ykcs11_module, pin=True)
    listing = json.loads(ok(cli(env, "tokens", "--pkcs11-lib", card.ykcs11_module, "--login", "--json")))
    (token,) = [t for m in listing if m["module"] == card.ykcs11_module for t in m["tokens"]
                if t["label"] == card.ykcs11_token_label]
    keys = {k["id"]: k for k in token["keys"] if k["class"] == "private"}
    key = keys["05"]
    assert key["sensitive"] is True and key["extractable"] is False
    assert key["neverExtractable"] is True and key["alwaysSensitive"] is True and key["local"] is True
    assert key["attestation"] is True
    assert all("attestation" not in k for k in token["keys"] if k["class"] == "public")
    text = ok(cli(env, "tokens", "--pkcs11-lib", card.ykcs11_module, "--login"))
    line = next(line for line in text.splitlines() if line.strip().startswith("private key") and "id %05" in line)
    assert "sensitive, not extractable, never extractable, always sensitive, generated on the token" in line
    assert "attestation certificate on the token" in line


def test_doctor_checks_the_attestation(card: VirtualYubiKey, management_key_file: str, tmp_path: Path,
                                       root_ca: CertificateAuthority) -> None:
    """doctor --attestation-roots: passes for a generated key with its certificate (and shows the
    serial), fails with RAH-ATT-003 when the roots did not issue the card's f9 key."""
    uri = generate(card, management_key_file, "05")
    env = card.subprocess_env(card.ykcs11_module, pin=True)
    request = tmp_path / "req.pem"
    ok(cli(env, "csr", "--private-key", uri, "--subject", "CN=doctor", "--out", str(request)))
    cert = write_pem(tmp_path / "leaf.pem", root_ca.issue_leaf(x509.load_pem_x509_csr(request.read_bytes()).public_key(),
                                                              "doctor"))
    cert_uri = ok(cli(env, "import-certificate", "--private-key", uri, "--certificate", str(cert),
                      "--management-key-source", management_key_file))
    arns = ["--trust-anchor-arn", "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/a",
            "--profile-arn", "arn:aws:rolesanywhere:us-east-1:123456789012:profile/p",
            "--role-arn", "arn:aws:iam::123456789012:role/r", "--endpoint", "http://127.0.0.1:9"]
    result = cli(env, "doctor", "--certificate", cert_uri, *arns, "--json",
                 "--attestation-roots", str(card.attestation_root_path))
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["attestation"]["status"] == "pass", checks["attestation"]
    assert f"serial {card.serial}" in checks["attestation"]["message"]
    foreign = write_pem(tmp_path / "foreign.pem", CertificateAuthority.create("Not Yubico").certificate)
    result = cli(env, "doctor", "--certificate", cert_uri, *arns, "--json", "--attestation-roots", str(foreign))
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["attestation"]["status"] == "fail" and checks["attestation"]["code"] == "RAH-ATT-003"
    assert result.returncode == 8
