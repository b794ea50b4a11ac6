"""keygen, csr and import-certificate on a blank software TPM token (swtpm + tpm2-pkcs11, no
resource manager: each CLI run is one C_Initialize and generates at most one key), ending in
credentials from the emulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, new_private_key, write_pem
from rolesanywhere_hsm.emulator import Emulator
from rolesanywhere_hsm.signers.pkcs11_uri import parse_pkcs11_uri
from tests.provision.flow import cli, credential_process, der, key_attributes, object_count, onboard
from tests.tokens.tpm import TpmToken

pytestmark = pytest.mark.tpm

TOKEN = "pkcs11:token=rah-blank"


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-2048"])
def test_blank_tpm_to_credentials(key_type: str, blank_tpm: TpmToken, root_ca: CertificateAuthority,
                                  emulator: Emulator, tmp_path: Path) -> None:
    env = blank_tpm.subprocess_env(pin=True)
    label = f"tpm-{key_type}"
    done = onboard(env, TOKEN, key_type, label, root_ca, tmp_path)
    key_id = parse_pkcs11_uri(done.key_uri).id
    assert key_id is not None

    lib = blank_tpm.open_library()
    try:
        attrs = key_attributes(lib, "rah-blank", blank_tpm.user_pin, key_id)
    finally:
        lib.finalize()  # free the TPM's object slots for the CLI
    assert attrs["SENSITIVE"] is True and attrs["EXTRACTABLE"] is False
    assert attrs["NEVER_EXTRACTABLE"] is True and attrs["ALWAYS_SENSITIVE"] is True
    assert attrs["TOKEN"] is True and attrs["SIGN"] is True and attrs["DECRYPT"] is False
    assert attrs["certificates"] == [der(done.certificate)] and attrs["certificate labels"] == [label]

    creds = credential_process(env, emulator, done.certificate_uri)
    assert creds["AccessKeyId"] == emulator.last_issued.access_key_id
    assert emulator.last_issued.leaf_serial == done.certificate.serial_number


def test_certificate_of_another_key_is_refused_and_the_tpm_token_is_unchanged(
        blank_tpm: TpmToken, root_ca: CertificateAuthority, tmp_path: Path) -> None:
    env = blank_tpm.subprocess_env(pin=True)
    result = cli(env, "keygen", "--token", TOKEN, "--label", "tpm-refuse")
    assert result.returncode == 0, result.stderr
    key_uri = result.stdout.strip()
    lib = blank_tpm.open_library()
    before = object_count(lib, "rah-blank", blank_tpm.user_pin)
    lib.finalize()
    other = write_pem(tmp_path / "other.crt", root_ca.issue_leaf(new_private_key("p256").public_key(), "x"))
    result = cli(env, "import-certificate", "--private-key", key_uri, "--certificate", str(other))
    assert result.returncode == 3 and "is not for the key" in result.stderr
    lib = blank_tpm.open_library()
    try:
        assert object_count(lib, "rah-blank", blank_tpm.user_pin) == before
    finally:
        lib.finalize()


def test_a_wrong_pin_costs_the_tpm_one_try(blank_tpm: TpmToken) -> None:
    before = blank_tpm.lockout_counter()
    env = dict(blank_tpm.subprocess_env(), RAH_PKCS11_PIN="999999")
    result = cli(env, "keygen", "--token", TOKEN, "--label", "never-made")
    assert result.returncode == 5 and "refused the PIN" in result.stderr and "999999" not in result.stderr
    assert blank_tpm.lockout_counter() == before + 1


def test_rsa_4096_is_refused_with_the_sizes_the_tpm_makes(blank_tpm: TpmToken) -> None:
    result = cli(blank_tpm.subprocess_env(pin=True), "keygen", "--token", TOKEN, "--label", "big",
                 "--key-type", "rsa-4096")
    assert result.returncode == 4
    assert "generates RSA keys of" in result.stderr and "not 4096" in result.stderr



def test_tpm2_pkcs11_stores_modifiable_false_but_does_not_enforce_it(blank_tpm: TpmToken) -> None:
    """keygen asks for CKA_MODIFIABLE false on the TPM too and tpm2-pkcs11 1.9 stores it, but
    its C_SetAttributeValue does not check it: a later program with the PIN can turn
    CKA_DECRYPT on. This pins the limitation docs/tpm.md states; when a tpm2-pkcs11 release
    enforces the attribute, this fails and the docs get updated."""
    from pkcs11 import Attribute, ObjectClass

    from tests.provision.flow import try_to_widen_the_key

    env = blank_tpm.subprocess_env(pin=True)
    result = cli(env, "keygen", "--token", TOKEN, "--key-type", "ec-p256", "--label", "locked")
    assert result.returncode == 0, result.stderr
    key_id = parse_pkcs11_uri(result.stdout.strip()).id
    assert key_id is not None
    lib = blank_tpm.open_library()
    try:
        with lib.get_token(token_label="rah-blank").open(user_pin=blank_tpm.user_pin) as session:
            (key,) = session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: key_id})
            modifiable = key[Attribute.MODIFIABLE]
        outcome = try_to_widen_the_key(lib, "rah-blank", blank_tpm.user_pin, key_id)
    finally:
        lib.finalize()
    assert modifiable is False  # keygen asked for it and the module kept it
    assert outcome["DECRYPT"] == "changed", outcome  # ... and does not enforce it (docs/tpm.md)
