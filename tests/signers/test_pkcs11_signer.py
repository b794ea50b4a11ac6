"""The PKCS#11 signer against real SoftHSM2 tokens: selection, PINs, mechanisms, pairing,
errors. Signatures are verified with `cryptography` against the certificate."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, write_pem
from rolesanywhere_hsm.errors import (
    KeyLoadError,
    ModuleLoadError,
    PinIncorrectError,
    Pkcs11UriError,
    SelectionError,
    TokenError,
    TokenSigningError,
)
from rolesanywhere_hsm.signers.base import (
    ALGORITHM_ECDSA,
    ALGORITHM_RSA,
    Signer,
    SignerConfig,
    load_signer,
)
from rolesanywhere_hsm.signers.mechanisms import (
    CKM_RSA_PKCS,
    CKM_SHA256_RSA_PKCS,
    SigningSpec,
    choose_signing_spec,
)
from rolesanywhere_hsm.signers.pkcs11 import (
    Pkcs11Signer,
    open_pkcs11_signer,
    resolve_module_path,
)
from rolesanywhere_hsm._dev.softhsm import SoftHsmToken
from tests.fixtures.softhsm import SOFTHSM_PIN, UTF8_LABEL
from tests.signatures import verify_signature

pytestmark = pytest.mark.softhsm

MESSAGE = b"AWS4-X509-ECDSA-SHA256\n20260101T000000Z\n20260101/us-east-1/rolesanywhere/aws4_request\nabc"


def assert_valid(signer: Signer, message: bytes, signature: bytes) -> None:
    """The signature verifies with the certificate's public key (wire encoding)."""
    public_key = x509.load_der_x509_certificate(signer.certificate).public_key()
    assert signer.algorithm == (ALGORITHM_RSA if isinstance(public_key, rsa.RSAPublicKey) else ALGORITHM_ECDSA)
    verify_signature(signer.certificate, message, signature)


@pytest.fixture
def token(softhsm_token: SoftHsmToken, monkeypatch: pytest.MonkeyPatch) -> SoftHsmToken:
    monkeypatch.setenv("RAH_PKCS11_PIN", SOFTHSM_PIN)
    return softhsm_token


def cert_config(token: SoftHsmToken, label: str, **options: object) -> SignerConfig:
    return SignerConfig(certificate=token.uri_for(label, type="cert"), **options)  # type: ignore[arg-type]


# -- selection and signing ---------------------------------------------------------------------


@pytest.mark.parametrize("label", ["ec-p256", "rsa-2048", "ec-p384", "ec-p521"])
def test_certificate_and_key_on_token_by_label(token: SoftHsmToken, label: str) -> None:
    with open_pkcs11_signer(cert_config(token, label)) as signer:
        assert signer.certificate == token.keys[label].certificate_der
        assert signer.chain == ()
        assert_valid(signer, MESSAGE, signer.sign(MESSAGE))


def test_certificate_and_key_by_id(token: SoftHsmToken) -> None:
    config = SignerConfig(certificate=token.uri_for(key_id=b"\x03", type="cert"),
                          private_key=token.uri_for(key_id=b"\x03"))
    with open_pkcs11_signer(config) as signer:
        assert signer.certificate == token.keys["ec-p384"].certificate_der
        assert_valid(signer, MESSAGE, signer.sign(MESSAGE))


def test_utf8_label(token: SoftHsmToken) -> None:
    uri = token.uri_for(UTF8_LABEL, type="cert")
    assert "%C3%A9" in uri  # percent-encoded UTF-8 in the URI
    with open_pkcs11_signer(SignerConfig(certificate=uri)) as signer:
        assert signer.certificate == token.keys[UTF8_LABEL].certificate_der
        assert_valid(signer, MESSAGE, signer.sign(MESSAGE))


def test_load_signer_registry_opens_a_pkcs11_signer(token: SoftHsmToken) -> None:
    with load_signer(cert_config(token, "ec-p256")) as signer:
        assert isinstance(signer, Pkcs11Signer)
        assert isinstance(signer, Signer)
        assert_valid(signer, MESSAGE, signer.sign(MESSAGE))


def test_certificate_from_file_key_on_token(token: SoftHsmToken, tmp_path: Path) -> None:
    key = token.keys["no-cert"]
    cert_file = write_pem(tmp_path / "leaf.pem", key.certificate)
    config = SignerConfig(certificate=str(cert_file), private_key=token.uri_for("no-cert"))
    with open_pkcs11_signer(config) as signer:
        assert signer.certificate == key.certificate_der
        assert_valid(signer, MESSAGE, signer.sign(MESSAGE))


def test_chain_keeps_only_the_path_from_the_intermediates_file(
    token: SoftHsmToken, tmp_path: Path, root_ca: CertificateAuthority,
    intermediate_ca: CertificateAuthority,
) -> None:
    unrelated = CertificateAuthority.create("Unrelated Root").issue_intermediate("Unrelated CA")
    bundle = write_pem(tmp_path / "bundle.pem", unrelated.certificate, root_ca.certificate,
                       intermediate_ca.certificate)
    with open_pkcs11_signer(cert_config(token, "ec-p256", intermediates=str(bundle))) as signer:
        from cryptography.hazmat.primitives.serialization import Encoding

        assert signer.chain == (intermediate_ca.certificate.public_bytes(Encoding.DER),)


def test_two_tokens_with_the_same_label(softhsm_factory: Callable[..., SoftHsmToken],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    first = softhsm_factory("dup", [("p256", "key", b"\x01")])
    second = softhsm_factory("dup", [("p256", "key", b"\x01")])
    assert first.serial != second.serial and first.conf == second.conf
    monkeypatch.setenv("RAH_PKCS11_PIN", SOFTHSM_PIN)

    with pytest.raises(SelectionError) as info:
        open_pkcs11_signer(SignerConfig(certificate="pkcs11:token=dup;object=key;type=cert"))
    text = info.value.diagnostics()
    assert "2 certificates match object='key', type=cert on tokens 'dup', 'dup'" in text
    assert first.serial in text and second.serial in text
    assert "token= / serial=" in text

    for chosen in (first, second):
        uri = chosen.uri_for("key", type="cert", serial=True)
        with open_pkcs11_signer(SignerConfig(certificate=uri)) as signer:
            assert signer.certificate == chosen.keys["key"].certificate_der
            assert_valid(signer, MESSAGE, signer.sign(MESSAGE))
    slot_uri = f"pkcs11:slot-id={_slot_id(second)};object=key;type=cert"
    with open_pkcs11_signer(SignerConfig(certificate=slot_uri)) as signer:
        assert signer.certificate == second.keys["key"].certificate_der


def test_same_object_label_on_two_tokens_is_chosen_by_token_label(
    softhsm_factory: Callable[..., SoftHsmToken], monkeypatch: pytest.MonkeyPatch
) -> None:
    alpha = softhsm_factory("alpha", [("p256", "workload", b"\x01")])
    beta = softhsm_factory("beta", [("p256", "workload", b"\x01")])
    monkeypatch.setenv("RAH_PKCS11_PIN", SOFTHSM_PIN)
    with pytest.raises(SelectionError) as info:
        open_pkcs11_signer(SignerConfig(certificate="pkcs11:object=workload;type=cert"))
    assert "alpha" in info.value.diagnostics() and "beta" in info.value.diagnostics()
    for chosen in (alpha, beta):
        with open_pkcs11_signer(SignerConfig(certificate=chosen.uri_for("workload", type="cert"))) as signer:
            assert signer.certificate == chosen.keys["workload"].certificate_der
            assert signer.token_label == chosen.label
            assert_valid(signer, MESSAGE, signer.sign(MESSAGE))


def _slot_id(token: SoftHsmToken) -> int:
    # Read from the selection error, which lists every token with its slot.
    try:
        open_pkcs11_signer(SignerConfig(certificate="pkcs11:token=absent;type=cert"))
    except SelectionError as exc:
        for part in exc.message.split("; "):
            if token.serial in part:
                return int(part.split("slot ")[1].split(" ")[0])
    raise AssertionError("slot not listed")


def test_ambiguous_object_is_refused_naming_what_matched(token: SoftHsmToken) -> None:
    with pytest.raises(SelectionError) as info:
        open_pkcs11_signer(cert_config(token, "dup"))
    text = info.value.diagnostics()
    assert "2 certificates match object='dup'" in text
    assert "id %08" in text and "id %09" in text
    assert "object= or id=" in text
    uri = token.uri_for("dup", key_id=b"\x09", type="cert")
    with open_pkcs11_signer(SignerConfig(certificate=uri)) as signer:
        assert signer.certificate == token.keys["dup@09"].certificate_der


def test_key_uri_without_object_or_id_matching_many_keys_is_refused(token: SoftHsmToken,
                                                                    tmp_path: Path) -> None:
    cert_file = write_pem(tmp_path / "leaf.pem", token.keys["ec-p256"].certificate)
    with pytest.raises(SelectionError, match=r"\d+ private keys match \(any\)"):
        open_pkcs11_signer(SignerConfig(certificate=str(cert_file), private_key="pkcs11:token=rah-test"))


# -- PINs --------------------------------------------------------------------------------------


def test_pin_from_uri_pin_value_and_pin_source(softhsm_token: SoftHsmToken, tmp_path: Path) -> None:
    uri = softhsm_token.uri_for("ec-p256", type="cert", pin=True)
    with open_pkcs11_signer(SignerConfig(certificate=uri)) as signer:
        assert SOFTHSM_PIN not in repr(signer)
        assert_valid(signer, MESSAGE, signer.sign(MESSAGE))
    pin_file = tmp_path / "pin"
    pin_file.write_text(SOFTHSM_PIN + "\n")
    uri = softhsm_token.uri_for("ec-p256", type="cert", pin_source=f"file:{pin_file}")
    with open_pkcs11_signer(SignerConfig(certificate=uri)) as signer:
        assert_valid(signer, MESSAGE, signer.sign(MESSAGE))


def test_wrong_pin_is_asked_once_tried_once_and_never_shown(softhsm_token: SoftHsmToken) -> None:
    asked: list[str] = []

    def callback(description: str) -> str:
        asked.append(description)
        return "Wrong-Pin-42"

    config = cert_config(softhsm_token, "ec-p256", secret_callback=callback)
    with pytest.raises(PinIncorrectError) as info:
        open_pkcs11_signer(config)
    assert asked == ["PIN for token 'rah-test'"]  # asked once, not in a loop
    text = info.value.diagnostics()
    assert "tried once and is not retried" in text
    assert "Wrong-Pin-42" not in text and "Wrong-Pin-42" not in repr(info.value)
    # The failed login left no state behind: the right PIN works in the same process.
    with open_pkcs11_signer(cert_config(softhsm_token, "ec-p256", secret_callback=lambda d: SOFTHSM_PIN)) as s:
        assert_valid(s, MESSAGE, s.sign(MESSAGE))


def test_no_pin_and_no_terminal_fails_fast(softhsm_env: dict[str, str],
                                           softhsm_token: SoftHsmToken) -> None:
    env = dict(softhsm_env)
    env.pop("RAH_PKCS11_PIN")
    script = (
        "import sys\n"
        "from rolesanywhere_hsm.errors import PinUnavailableError\n"
        "from rolesanywhere_hsm.signers.base import SignerConfig\n"
        "from rolesanywhere_hsm.signers.pkcs11 import open_pkcs11_signer\n"
        "try:\n"
        "    open_pkcs11_signer(SignerConfig(certificate=sys.argv[1]))\n"
        "except PinUnavailableError as exc:\n"
        "    print('PinUnavailableError', exc.message)\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script, softhsm_token.uri_for("ec-p256", type="cert")],
        env=env, start_new_session=True, stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=30, cwd=str(Path(__file__).parents[2]),
    )
    assert done.stdout.startswith("PinUnavailableError"), done.stdout + done.stderr
    assert "no terminal" in done.stdout
    assert time.monotonic() - started < 15


# -- always-authenticate -----------------------------------------------------------------------


@pytest.mark.parametrize("reuse_pin", [True, False])
def test_always_authenticate_key(softhsm_token: SoftHsmToken, reuse_pin: bool) -> None:
    asked: list[str] = []

    def callback(description: str) -> str:
        asked.append(description)
        return SOFTHSM_PIN

    config = cert_config(softhsm_token, "always-auth", secret_callback=callback, reuse_pin=reuse_pin)
    with open_pkcs11_signer(config) as signer:
        assert signer.always_authenticate
        for _ in range(3):
            assert_valid(signer, MESSAGE, signer.sign(MESSAGE))
    if reuse_pin:
        assert len(asked) == 1  # the user PIN, reused as context PIN
    else:
        assert len(asked) == 4  # the user PIN, then a context PIN per signature
        assert asked[1].startswith("PIN to sign with key")


def test_ordinary_key_is_not_always_authenticate(token: SoftHsmToken) -> None:
    with open_pkcs11_signer(cert_config(token, "ec-p256")) as signer:
        assert not signer.always_authenticate


# -- mechanisms ----------------------------------------------------------------------------------


def test_rsa_fallback_mechanism_gives_the_same_signature(token: SoftHsmToken) -> None:
    fallback = choose_signing_spec("RSA", {CKM_RSA_PKCS})
    with open_pkcs11_signer(cert_config(token, "rsa-2048"), spec=fallback) as signer:
        assert signer.spec.mechanism == CKM_RSA_PKCS
        via_digest_info = signer.sign(MESSAGE)
        assert_valid(signer, MESSAGE, via_digest_info)
    with open_pkcs11_signer(cert_config(token, "rsa-2048")) as signer:
        assert signer.spec.mechanism == CKM_SHA256_RSA_PKCS  # SoftHSM offers it
        assert signer.sign(MESSAGE) == via_digest_info  # PKCS#1 v1.5 is deterministic


# -- many signatures, errors and recovery -------------------------------------------------------


def test_many_signatures_one_login(token: SoftHsmToken) -> None:
    with open_pkcs11_signer(cert_config(token, "ec-p256")) as signer:
        messages = [MESSAGE + str(i).encode() for i in range(50)]
        for message in messages:
            assert_valid(signer, message, signer.sign(message))
        assert signer.login_count == 1
        assert signer.sign_count == 50


def test_signing_error_discards_the_session_and_the_next_sign_reopens(token: SoftHsmToken) -> None:
    # Raw CKM_RSA_PKCS over the whole message: too long a message makes C_Sign fail.
    raw = SigningSpec("RSA", CKM_RSA_PKCS, hash_on_host=False, digest_info=False, raw_to_der=False)
    with open_pkcs11_signer(cert_config(token, "rsa-2048"), spec=raw) as signer:
        with pytest.raises(TokenSigningError, match="failed while signing"):
            signer.sign(b"x" * 400)
        signature = signer.sign(b"short")  # a new session, logged in again
        public_key = x509.load_der_x509_certificate(signer.certificate).public_key()
        assert public_key.recover_data_from_signature(signature, padding.PKCS1v15(), None) == b"short"
        assert signer.login_count == 2


def test_closed_signer_refuses_and_close_is_idempotent(token: SoftHsmToken) -> None:
    signer = open_pkcs11_signer(cert_config(token, "ec-p256"))
    signer.close()
    signer.close()
    with pytest.raises(TokenError, match="closed"):
        signer.sign(MESSAGE)
    # Closing finalised the module: a new signer initialises it again.
    with open_pkcs11_signer(cert_config(token, "ec-p256")) as again:
        assert_valid(again, MESSAGE, again.sign(MESSAGE))


# -- key / certificate pairing ---------------------------------------------------------------------


def test_key_of_another_type_is_refused(token: SoftHsmToken, tmp_path: Path) -> None:
    cert_file = write_pem(tmp_path / "leaf.pem", token.keys["rsa-2048"].certificate)
    with pytest.raises(KeyLoadError, match="is EC but the certificate holds an RSA key"):
        open_pkcs11_signer(SignerConfig(certificate=str(cert_file), private_key=token.uri_for("ec-p256")))


def test_mismatched_key_found_by_public_key_object(token: SoftHsmToken, tmp_path: Path) -> None:
    cert_file = write_pem(tmp_path / "leaf.pem", token.keys["ec-p256"].certificate)
    with pytest.raises(KeyLoadError, match="does not belong to the certificate"):
        open_pkcs11_signer(SignerConfig(certificate=str(cert_file), private_key=token.uri_for("dup", b"\x08")))


def test_a_mismatch_the_public_key_object_shows_is_a_finding_before_any_pin(
    token: SoftHsmToken, tmp_path: Path,
) -> None:
    """The public key object with the key's CKA_ID is listed without a login: locate reports
    the mismatch as a finding (code, setting), and unlock refuses on it without asking."""
    from rolesanywhere_hsm.signers.pkcs11.opening import locate_pkcs11
    from rolesanywhere_hsm.signers.secretpolicy import SecretPolicy

    cert_file = write_pem(tmp_path / "leaf.pem", token.keys["ec-p256"].certificate)
    config = SignerConfig(certificate=str(cert_file), private_key=token.uri_for("dup", b"\x08"))
    asked: list[str] = []
    policy = SecretPolicy(lambda what: asked.append(what) or SOFTHSM_PIN, environ={})
    with locate_pkcs11(config, environ={}) as located:
        [finding] = located.findings
        assert finding.code == "RAH-KEY-001" and finding.setting == "private-key"
        assert f"on token {token.label!r} does not belong to the certificate" in finding.message
        assert "shows another public key" in finding.message
        with pytest.raises(KeyLoadError, match="does not belong"):
            located.unlock(policy)
    assert asked == []
    # Its own certificate: no finding, and the one PIN is asked at unlock.
    own = SignerConfig(certificate=str(write_pem(tmp_path / "own.pem", token.keys["dup"].certificate)),
                       private_key=token.uri_for("dup", b"\x08"))
    with locate_pkcs11(own, environ={}) as located:
        assert located.findings == []
        with located.unlock(policy) as signer:
            assert_valid(signer, MESSAGE, signer.sign(MESSAGE))
    assert len(asked) == 1


def test_key_without_public_half_is_checked_by_its_first_real_signature(
    token: SoftHsmToken, tmp_path: Path,
) -> None:
    # Its own certificate: the first signature verifies, later ones are not re-checked.
    with open_pkcs11_signer(cert_config(token, "no-public-key")) as signer:
        assert_valid(signer, MESSAGE, signer.sign(MESSAGE))
        assert_valid(signer, b"two", signer.sign(b"two"))
        assert signer.sign_count == 2
    # Another key's certificate: refused at the first signature, and no signature is returned.
    cert_file = write_pem(tmp_path / "other.pem", token.keys["ec-p256"].certificate)
    config = SignerConfig(certificate=str(cert_file), private_key=token.uri_for("no-public-key"))
    with open_pkcs11_signer(config) as signer:
        with pytest.raises(KeyLoadError, match="does not belong"):
            signer.sign(MESSAGE)
        with pytest.raises(KeyLoadError):
            signer.sign(MESSAGE)
        assert signer.sign_count == 1  # the second call did not reach the token


# -- module, token and object errors ------------------------------------------------------------


def test_missing_module_path(token: SoftHsmToken) -> None:
    config = cert_config(token, "ec-p256", pkcs11_lib="/nonexistent/libnothing.so")
    with pytest.raises(ModuleLoadError, match="does not exist"):
        open_pkcs11_signer(config)


def test_module_name_not_found(token: SoftHsmToken) -> None:
    with pytest.raises(ModuleLoadError, match="'no-such-module' .* not found"):
        open_pkcs11_signer(SignerConfig(certificate="pkcs11:object=x?module-name=no-such-module"))


def test_file_that_is_not_a_module(token: SoftHsmToken, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.so"
    bogus.write_text("not a shared object")
    with pytest.raises(ModuleLoadError, match="bogus.so"):
        open_pkcs11_signer(cert_config(token, "ec-p256", pkcs11_lib=str(bogus)))


def test_module_path_in_uri_wins_over_environment(token: SoftHsmToken,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAH_PKCS11_MODULE", "/nonexistent/libnothing.so")
    uri = token.uri_for("ec-p256", type="cert", module=True)
    with open_pkcs11_signer(SignerConfig(certificate=uri, pkcs11_lib="/nonexistent/x.so")) as signer:
        assert_valid(signer, MESSAGE, signer.sign(MESSAGE))


def test_module_discovery_order(softhsm_module: str) -> None:
    from rolesanywhere_hsm.signers.pkcs11_uri import parse_pkcs11_uri

    env = {"RAH_PKCS11_MODULE": softhsm_module}
    by_name = parse_pkcs11_uri("pkcs11:?module-name=softhsm2")
    assert resolve_module_path((by_name,), None, {}) == softhsm_module  # libsofthsm2.so
    assert resolve_module_path((None,), "libsofthsm2.so", {}) == softhsm_module
    assert resolve_module_path((None,), None, env) == softhsm_module
    default = resolve_module_path((None,), None, {})
    assert default.endswith("/p11-kit-proxy.so")


def test_missing_token(token: SoftHsmToken) -> None:
    with pytest.raises(SelectionError) as info:
        open_pkcs11_signer(SignerConfig(certificate="pkcs11:token=nope;object=ec-p256;type=cert"))
    text = info.value.diagnostics()
    assert "No token matches token='nope'" in text
    assert "'rah-test'" in text  # says what is there


def test_missing_object(token: SoftHsmToken) -> None:
    with pytest.raises(SelectionError, match="No certificate matches object='nope'"):
        open_pkcs11_signer(cert_config(token, "nope"))
    with pytest.raises(SelectionError, match="No private key matches object='nope'"):
        open_pkcs11_signer(SignerConfig(certificate=token.uri_for("ec-p256", type="cert"),
                                        private_key=token.uri_for("nope")))


def test_wrong_type_in_uri(token: SoftHsmToken) -> None:
    with pytest.raises(Pkcs11UriError, match="type=private"):
        open_pkcs11_signer(SignerConfig(certificate=token.uri_for("ec-p256", type="private")))


def test_malformed_uri_names_the_option(token: SoftHsmToken) -> None:
    with pytest.raises(Pkcs11UriError, match="--private-key: .*unknown path attribute"):
        open_pkcs11_signer(SignerConfig(certificate="c.pem", private_key="pkcs11:labl=x"))


def test_environment_is_read_at_each_signer_open(token: SoftHsmToken, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Trap 1: a second token directory, used after the first signer closed, is seen."""
    with open_pkcs11_signer(cert_config(token, "ec-p256")) as signer:
        signer.sign(MESSAGE)
    other = token.copy_to(tmp_path / "other")
    os.rename(token.directory / "tokens", token.directory / "tokens-moved")  # first one gone
    monkeypatch.setenv("SOFTHSM2_CONF", str(other.conf))
    with open_pkcs11_signer(cert_config(other, "ec-p256")) as signer:
        assert_valid(signer, MESSAGE, signer.sign(MESSAGE))


def test_second_signer_on_the_same_token_is_refused_while_the_first_is_open(token: SoftHsmToken) -> None:
    with open_pkcs11_signer(cert_config(token, "ec-p256")) as first:
        with pytest.raises(TokenError, match="already logged in"):
            open_pkcs11_signer(cert_config(token, "ec-p384"))
        assert_valid(first, MESSAGE, first.sign(MESSAGE))  # the first one is unharmed
    with open_pkcs11_signer(cert_config(token, "ec-p384")) as second:
        assert_valid(second, MESSAGE, second.sign(MESSAGE))


def test_list_token_certificates_needs_no_pin(softhsm_token: SoftHsmToken) -> None:
    from rolesanywhere_hsm.signers.pkcs11 import list_token_certificates

    found = list_token_certificates("pkcs11:token=rah-test;object=dup")
    assert sorted(c.id for c in found) == [b"\x08", b"\x09"]
    for cert in found:
        assert cert.der == softhsm_token.keys["dup" if cert.id == b"\x08" else "dup@09"].certificate_der
        assert ";type=cert" in cert.uri and f"module-path={softhsm_token.module}" in cert.uri
        assert "serial=" not in cert.uri  # the shortest URI: one token has this label
    everything = list_token_certificates("pkcs11:")
    assert len(everything) == sum(1 for k in softhsm_token.keys.values() if k.certificate_on_token)


def test_refused_context_pin_is_never_presented_again(softhsm_token: SoftHsmToken) -> None:
    answers = iter([SOFTHSM_PIN, "Wrong-Context-Pin"])
    asked: list[str] = []

    def callback(description: str) -> str:
        asked.append(description)
        return next(answers)

    config = cert_config(softhsm_token, "always-auth", secret_callback=callback)
    with open_pkcs11_signer(config) as signer:
        with pytest.raises(PinIncorrectError, match="context PIN"):
            signer.sign(MESSAGE)
        with pytest.raises(PinIncorrectError, match="does not present a PIN again"):
            signer.sign(MESSAGE)
        assert len(asked) == 2 and signer.sign_count == 0 and signer.login_count == 1


def test_list_certificates_for_read_certificate_data(softhsm_token: SoftHsmToken) -> None:
    import hashlib
    import json

    from rolesanywhere_hsm.signers.pkcs11 import list_certificates

    [entry] = list_certificates(softhsm_token.uri_for("ec-p384", type="cert"))
    key = softhsm_token.keys["ec-p384"]
    assert entry["sha1Fingerprint"] == hashlib.sha1(key.certificate_der).hexdigest().upper()
    assert entry["serialNumber"] == format(key.certificate.serial_number, "x")
    assert "ec-p384" in entry["subject"] and "Intermediate" in entry["issuer"]
    assert entry["id"] == "03" and entry["label"] == "ec-p384"
    json.dumps(entry)
    with open_pkcs11_signer(SignerConfig(certificate=entry["uri"],
                                         secret_callback=lambda d: SOFTHSM_PIN)) as signer:
        assert signer.certificate == key.certificate_der  # the printed URI selects it
