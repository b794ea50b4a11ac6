"""keygen, csr and import-certificate on the virtual YubiKey through the real ykcs11 (and csr
through OpenSC): the card generates the key in a PIV slot after mutual authentication with the
management key, and stores the certificate with PUT DATA."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, write_pem
from rolesanywhere_hsm.emulator import Emulator
from tests.provision.flow import cli, credential_process, der, key_attributes
from tests.tokens.yubikey import VirtualYubiKey

pytestmark = pytest.mark.yubikey


@pytest.mark.parametrize("slot", ["9a", "9d"])
def test_csr_is_signed_by_the_slot_key(yubikey: VirtualYubiKey, piv_module: str, slot: str) -> None:
    uri = yubikey.uri_for(slot, piv_module, type="private", by_label=True)
    result = cli(yubikey.subprocess_env(piv_module, pin=True), "csr", "--private-key", uri,
                 "--subject", "CN=from-the-card")
    assert result.returncode == 0, result.stderr
    request = x509.load_pem_x509_csr(result.stdout.encode())
    assert request.is_signature_valid
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert (request.public_key().public_bytes(serialization.Encoding.DER, spki)
            == yubikey.slots[slot].certificate.public_key().public_bytes(serialization.Encoding.DER, spki))



def ykcs11_token(card: VirtualYubiKey) -> str:
    return f"pkcs11:token=YubiKey%20PIV%20%23{card.serial}"


@pytest.mark.parametrize(("key_type", "slot_id"), [("ec-p256", "05"), ("rsa-2048", "06")])
def test_blank_slot_to_credentials(card: VirtualYubiKey, management_key_file: str, key_type: str,
                                   slot_id: str, root_ca: CertificateAuthority, emulator: Emulator,
                                   tmp_path: Path) -> None:
    env = card.subprocess_env(card.ykcs11_module, pin=True)
    result = cli(env, "keygen", "--token", ykcs11_token(card), "--key-type", key_type, "--label", "ignored",
                 "--id", slot_id, "--management-key-source", management_key_file)
    assert result.returncode == 0, result.stderr
    key_uri = result.stdout.strip()
    retired = int(slot_id, 16) - 4
    assert f"object=Private%20key%20for%20Retired%20Key%20{retired}" in key_uri and f"id=%{slot_id}" in key_uri
    assert card.status()["verify_attempts"] == 0  # the management key, not the PIN, wrote the slot

    result = cli(env, "csr", "--private-key", key_uri, "--subject", "CN=yubikey-workload")
    assert result.returncode == 0, result.stderr
    request = x509.load_pem_x509_csr(result.stdout.encode())
    assert request.is_signature_valid
    certificate = root_ca.issue_leaf(request.public_key(), "yubikey-workload")
    cert_path = write_pem(tmp_path / "leaf.pem", certificate)
    result = cli(env, "import-certificate", "--private-key", key_uri, "--certificate", str(cert_path),
                 "--management-key-source", management_key_file)
    assert result.returncode == 0, result.stderr
    cert_uri = result.stdout.strip()
    assert f"object=X.509%20Certificate%20for%20Retired%20Key%20{retired}" in cert_uri

    lib = card.open_library(card.ykcs11_module)
    try:
        attrs = key_attributes(lib, card.ykcs11_token_label, card.pin, bytes.fromhex(slot_id))
    finally:
        lib.finalize()
    assert attrs["SENSITIVE"] is True and attrs["EXTRACTABLE"] is False and attrs["SIGN"] is True
    assert der(certificate) in attrs["certificates"]

    creds = credential_process(env, emulator, cert_uri)
    assert creds["AccessKeyId"] == emulator.last_issued.access_key_id
    assert emulator.last_issued.leaf_serial == certificate.serial_number


def test_keygen_never_overwrites_a_slot(card: VirtualYubiKey, management_key_file: str) -> None:
    env = card.subprocess_env(card.ykcs11_module)
    result = cli(env, "keygen", "--token", ykcs11_token(card), "--label", "x", "--id", "01",
                 "--management-key-source", management_key_file)
    assert result.returncode == 2 and "id %01" in result.stderr and "never overwrites" in result.stderr
    assert card.status()["generated"] == []


def test_a_piv_card_needs_a_slot_id_and_the_management_key(card: VirtualYubiKey, management_key_file: str,
                                                           tmp_path: Path) -> None:
    env = card.subprocess_env(card.ykcs11_module, pin=True)
    result = cli(env, "keygen", "--token", ykcs11_token(card), "--label", "x", "--id", "05")
    assert result.returncode == 4 and "management key" in result.stderr
    assert "--management-key-source" in result.stderr
    result = cli(env, "keygen", "--token", ykcs11_token(card), "--label", "x",
                 "--management-key-source", management_key_file)
    assert result.returncode == 2 and "names the key slot" in result.stderr
    wrong = tmp_path / "wrong.key"
    wrong.write_text("00" * 24)
    result = cli(env, "keygen", "--token", ykcs11_token(card), "--label", "x", "--id", "05",
                 "--management-key-source", f"file:{wrong}")
    assert result.returncode == 5 and "refused the management key" in result.stderr
    assert "00" * 24 not in result.stderr
    assert card.status()["verify_attempts"] == 0 and card.status()["generated"] == []


def test_opensc_writes_are_refused_before_using_the_pin(card: VirtualYubiKey, management_key_file: str,
                                                       tmp_path: Path) -> None:
    module = card.opensc_module
    env = card.subprocess_env(module, pin=True)
    token = card.uri_for("9a", module).split(";id=")[0]
    result = cli(env, "keygen", "--token", token, "--label", "x", "--id", "05",
                 "--management-key-source", management_key_file)
    assert result.returncode == 4 and "ykcs11 module only" in result.stderr
    cert = write_pem(tmp_path / "c.pem", card.slots["9a"].certificate)
    result = cli(env, "import-certificate", "--private-key",
                 card.uri_for("9a", module, type="private", by_label=True), "--certificate", str(cert))
    assert result.returncode == 4 and "storing a certificate" in result.stderr
    assert card.status()["verify_attempts"] == 0
