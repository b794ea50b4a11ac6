"""csr and keygen on the virtual YubiKey through the real ykcs11 and OpenSC modules."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rolesanywhere_hsm.devpki import write_pem
from tests.provision.flow import cli
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


def test_keygen_and_import_refuse_piv_cards_before_using_the_pin(
        yubikey: VirtualYubiKey, piv_module: str, tmp_path: Path) -> None:
    env = yubikey.subprocess_env(piv_module, pin=True)
    token = yubikey.uri_for("9a", piv_module).split(";id=")[0]
    result = cli(env, "keygen", "--token", token, "--label", "x", "--id", "05")
    assert result.returncode == 4 and "is a PIV card: generating a key" in result.stderr
    assert "ykman piv keys generate" in result.stderr
    cert = write_pem(tmp_path / "c.pem", yubikey.slots["9a"].certificate)
    result = cli(env, "import-certificate", "--private-key",
                 yubikey.uri_for("9a", piv_module, type="private", by_label=True), "--certificate", str(cert))
    assert result.returncode == 4 and "storing a certificate" in result.stderr
    assert yubikey.status()["verify_attempts"] == 0
