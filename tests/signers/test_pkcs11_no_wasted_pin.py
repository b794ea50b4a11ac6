"""Selection that never spends a PIN on a lost cause: the certificate is found before any
login (certificates are public objects), an empty or ambiguous selection is reported before a
PIN is asked (even with a wrong PIN set), every token is searched when the URI names none, and
a key that needs no login is used without one. On SoftHSM (several tokens), the TPM (which
counts failed logins) and the virtual YubiKey (which counts PIN verifications)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from rolesanywhere_hsm.errors import CertificateError, SelectionError
from rolesanywhere_hsm.signers.base import SignerConfig
from rolesanywhere_hsm.signers.pkcs11 import open_pkcs11_signer
from rolesanywhere_hsm._dev.softhsm import SoftHsmToken
from tests.fixtures.softhsm import SOFTHSM_PIN
from tests.signatures import verify_signature
from tests.tokens.tpm import TpmToken
from tests.tokens.yubikey import VirtualYubiKey
from tests.secretasker import SecretAsker

MESSAGE = b"AWS4-X509-ECDSA-SHA256\n20260101T000000Z\n20260101/us-east-1/rolesanywhere/aws4_request\nabc"


def never_asked(description: str) -> str:
    raise AssertionError(f"a PIN was asked for: {description}")


@pytest.fixture
def two_tokens(softhsm_factory: Callable[..., SoftHsmToken], tmp_path) -> tuple[SoftHsmToken, SoftHsmToken]:  # noqa: ANN001
    """Two SoftHSM tokens in one token directory: 'left' holds 'only-left' and 'shared',
    'right' holds 'only-right' and 'shared'."""
    left = softhsm_factory("left", [("p256", "only-left", b"\x01"), ("p256", "shared", b"\x02")])
    right = softhsm_factory("right", [("p256", "only-right", b"\x01"), ("p256", "shared", b"\x02")])
    assert left.conf == right.conf
    return left, right


@pytest.mark.softhsm
def test_without_token_attributes_the_single_holder_is_used(two_tokens: tuple[SoftHsmToken, SoftHsmToken]) -> None:
    left, right = two_tokens
    for token, label in ((left, "only-left"), (right, "only-right")):
        asker = SecretAsker(SOFTHSM_PIN)
        config = SignerConfig(certificate=f"pkcs11:object={label};type=cert", secret_callback=asker)
        with open_pkcs11_signer(config) as signer:
            assert signer.certificate == token.keys[label].certificate_der
            assert signer.token_label == token.label
            verify_signature(signer.certificate, MESSAGE, signer.sign(MESSAGE))
        assert asker.asked == ["PIN for token " + repr(token.label)]


@pytest.mark.softhsm
def test_ambiguity_across_tokens_is_reported_before_any_pin(two_tokens: tuple[SoftHsmToken, SoftHsmToken]) -> None:
    left, right = two_tokens
    config = SignerConfig(certificate="pkcs11:object=shared;type=cert", secret_callback=never_asked)
    with pytest.raises(SelectionError, match="2 certificates match object='shared'") as info:
        open_pkcs11_signer(config)
    text = info.value.diagnostics()
    assert left.serial in text and right.serial in text


@pytest.mark.softhsm
@pytest.mark.parametrize("uri", [
    "pkcs11:token=left;object=missing;type=cert?pin-value=a-wrong-pin",
    "pkcs11:object=shared;type=cert?pin-value=a-wrong-pin",
])
def test_a_wrong_pin_does_not_hide_the_selection_error(two_tokens: tuple[SoftHsmToken, SoftHsmToken],
                                                        uri: str) -> None:
    """Without the fix, the wrong PIN was presented first and the selection never reported."""
    with pytest.raises(SelectionError) as info:
        open_pkcs11_signer(SignerConfig(certificate=uri, secret_callback=never_asked))
    assert "a-wrong-pin" not in info.value.diagnostics()


@pytest.mark.softhsm
def test_nothing_matching_names_what_the_token_holds(two_tokens: tuple[SoftHsmToken, SoftHsmToken]) -> None:
    with pytest.raises(SelectionError, match="No certificate matches object='missing'") as info:
        open_pkcs11_signer(SignerConfig(certificate="pkcs11:token=right;object=missing",
                                        secret_callback=never_asked))
    assert "'only-right'" in info.value.diagnostics()


@pytest.mark.softhsm
def test_key_uri_without_token_finds_the_token_holding_the_certificate_file(
    two_tokens: tuple[SoftHsmToken, SoftHsmToken], tmp_path,  # noqa: ANN001
) -> None:
    left, right = two_tokens
    cert_file = tmp_path / "right.pem"
    cert_file.write_bytes(right.keys["only-right"].certificate.public_bytes(Encoding.PEM))
    asker = SecretAsker(SOFTHSM_PIN)
    config = SignerConfig(certificate=str(cert_file), private_key="pkcs11:id=%01;type=private",
                          secret_callback=asker)
    with open_pkcs11_signer(config) as signer:
        assert signer.token_label == "right"
        verify_signature(signer.certificate, MESSAGE, signer.sign(MESSAGE))


@pytest.mark.softhsm
def test_a_key_that_needs_no_login_is_used_without_a_pin(softhsm_factory: Callable[..., SoftHsmToken],
                                                         intermediate_ca) -> None:  # noqa: ANN001
    token = softhsm_factory("open", [("p256", "logged", b"\x01")])
    token.add_key("p256", "public-key-9e", b"\x02", intermediate_ca, needs_login=False)
    with open_pkcs11_signer(SignerConfig(certificate="pkcs11:token=open;object=public-key-9e",
                                         secret_callback=never_asked)) as signer:
        verify_signature(signer.certificate, MESSAGE, signer.sign(MESSAGE))
        assert signer.login_count == 0
    asker = SecretAsker(SOFTHSM_PIN)  # the private one still logs in, once
    with open_pkcs11_signer(SignerConfig(certificate="pkcs11:token=open;object=logged",
                                         secret_callback=asker)) as signer:
        verify_signature(signer.certificate, MESSAGE, signer.sign(MESSAGE))
    assert len(asker.asked) == 1


@pytest.mark.softhsm
def test_a_ca_certificate_is_refused_as_the_leaf_before_any_pin(softhsm_token: SoftHsmToken,
                                                               intermediate_ca) -> None:  # noqa: ANN001
    """The acceptance rules are the file signer's too (signers.acceptance)."""
    softhsm_token.add_certificate(intermediate_ca.certificate, "issuing-ca", b"\xca")
    with pytest.raises(CertificateError, match="is a CA certificate"):
        open_pkcs11_signer(SignerConfig(certificate=softhsm_token.uri_for("issuing-ca"),
                                        secret_callback=never_asked))


@pytest.mark.tpm
def test_tpm_selection_errors_cost_no_failed_login(tpm: TpmToken) -> None:
    before = tpm.lockout_counter()
    for uri in (f"pkcs11:token={tpm.token_label};object=missing?pin-value=wrong-pin-1",
                f"pkcs11:token={tpm.token_label};id=%ff?pin-value=wrong-pin-2"):
        with pytest.raises(SelectionError, match="No certificate matches"):
            open_pkcs11_signer(SignerConfig(certificate=uri, secret_callback=never_asked))
    assert tpm.lockout_counter() == before


@pytest.mark.tpm
def test_tpm_certificate_found_without_token_attributes(tpm: TpmToken) -> None:
    asker = SecretAsker(tpm.user_pin)
    config = SignerConfig(certificate=f"pkcs11:object={tpm.ec.label};type=cert", secret_callback=asker)
    with open_pkcs11_signer(config) as signer:
        verify_signature(signer.certificate, MESSAGE, signer.sign(MESSAGE))
    assert len(asker.asked) == 1


@pytest.mark.yubikey
def test_yubikey_attestation_twin_is_reported_with_a_wrong_pin_and_no_verification(yubikey: VirtualYubiKey) -> None:
    module = yubikey.ykcs11_module
    uri = yubikey.uri_for("9a", module, type="cert", module_path=True) + "&pin-value=999999"
    with pytest.raises(SelectionError, match="Attestation"):
        open_pkcs11_signer(SignerConfig(certificate=uri, secret_callback=never_asked))
    assert yubikey.status()["verify_attempts"] == 0 and yubikey.pin_retries_left() == 3


@pytest.mark.yubikey
def test_yubikey_9e_through_opensc_needs_no_pin(yubikey: VirtualYubiKey) -> None:
    """OpenSC shows the card-authentication key (PIN policy never) without login."""
    module = yubikey.opensc_module
    uri = yubikey.uri_for("9e", module, type="cert", by_label=True, module_path=True)
    with open_pkcs11_signer(SignerConfig(certificate=uri, secret_callback=never_asked)) as signer:
        for _ in range(3):
            verify_signature(signer.certificate, MESSAGE, signer.sign(MESSAGE))
        assert signer.login_count == 0
    status = yubikey.status()
    assert status["verify_attempts"] == 0 and status["signatures"] == {"9e": 3}


@pytest.mark.yubikey
def test_yubikey_9e_through_ykcs11_logs_in_once(yubikey: VirtualYubiKey) -> None:
    """ykcs11 hides every private key until C_Login, whatever the slot's PIN policy: the PIN
    is asked once (docs/yubikey.md says to use OpenSC for a PIN-less 9e)."""
    module = yubikey.ykcs11_module
    asker = SecretAsker(yubikey.pin)
    uri = yubikey.uri_for("9e", module, type="cert", by_label=True, module_path=True)
    with open_pkcs11_signer(SignerConfig(certificate=uri, secret_callback=asker)) as signer:
        verify_signature(signer.certificate, MESSAGE, signer.sign(MESSAGE))
    assert len(asker.asked) == 1 and yubikey.status()["verify_attempts"] == 1
