"""The tpmkey signer: TSS2 PEM key files signed by a real (software) TPM, in process.

Pure rules (return-code classes, TCTI choice, file sniffing) are tested on plain data; every
signature is made by swtpm and verified with the certificate's public key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from rolesanywhere_hsm.errors import (
    KeyLoadError,
    PinIncorrectError,
    PinUnavailableError,
    TokenError,
    UsageError,
)
from rolesanywhere_hsm.signers.base import ALGORITHM_ECDSA, ALGORITHM_RSA, SignerConfig, load_signer, signer_kind
from rolesanywhere_hsm.signers.tpmkey import is_tss2_key_file, tcti_from_env, tpm_error_kind
from tests.tokens.tpmkey import TpmKeyFile, TpmWithKeyFiles

MESSAGE = b"AWS4-X509-ECDSA-SHA256\n20260101T000000Z\n20260101/us-east-1/rolesanywhere/aws4_request\nabc"


def verify(certificate: x509.Certificate, signature: bytes, message: bytes = MESSAGE) -> None:
    public = certificate.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))


def config(key: TpmKeyFile, **kw: object) -> SignerConfig:
    return SignerConfig(certificate=str(key.certificate_path), private_key=str(key.path), **kw)  # type: ignore[arg-type]


# -- pure rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(("rc", "kind"), [
    (0x98E, "auth"),  # TPM_RC_AUTH_FAIL on session 1
    (0x08E, "auth"),
    (0x9A2, "auth-noda"),  # TPM_RC_BAD_AUTH on session 1
    (0x921, "lockout"),
    (0x99F, "integrity"),  # TPM_RC_INTEGRITY (format one, with a session number)
    (0x1DF, "integrity"),  # ... on parameter 1
    (0x184, "other"),  # TPM_RC_VALUE
    (0x000A000A, "tss"),  # a TCTI layer error (IO failure)
    (0x00070001, "tss"),
])
def test_tpm_error_kind(rc: int, kind: str) -> None:
    assert tpm_error_kind(rc) == kind


def test_tcti_from_env_prefers_ours_then_tpm2_tools_then_tcti() -> None:
    env = {"TCTI": "device:/dev/tpm0", "TPM2TOOLS_TCTI": "swtpm:path=/s", "RAH_TPM_TCTI": "mssim:"}
    assert tcti_from_env(env) == "mssim:"
    del env["RAH_TPM_TCTI"]
    assert tcti_from_env(env) == "swtpm:path=/s"
    del env["TPM2TOOLS_TCTI"]
    assert tcti_from_env(env) == "device:/dev/tpm0"
    assert tcti_from_env({"RAH_TPM_TCTI": "  "}) is None
    assert tcti_from_env({}) is None


def test_sniffing_is_bounded_and_never_raises(tmp_path: Path) -> None:
    head = tmp_path / "head.pem"
    head.write_bytes(b"comment line\n-----BEGIN TSS2 PRIVATE KEY-----\nAAAA\n-----END TSS2 PRIVATE KEY-----\n")
    late = tmp_path / "late.pem"
    late.write_bytes(b"x" * 9000 + b"-----BEGIN TSS2 PRIVATE KEY-----\n")
    plain = tmp_path / "plain.pem"
    plain.write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    assert is_tss2_key_file(str(head))
    assert not is_tss2_key_file(str(late))
    assert not is_tss2_key_file(str(plain))
    assert not is_tss2_key_file(str(tmp_path / "missing.pem"))
    assert not is_tss2_key_file(str(tmp_path))  # a directory
    assert signer_kind(SignerConfig(certificate="c.pem", private_key=str(head))) == "tpmkey"
    assert signer_kind(SignerConfig(certificate="c.pem", private_key=str(plain))) == "file"
    assert signer_kind(SignerConfig(certificate="pkcs11:token=x", private_key=str(head))) == "pkcs11"


def test_missing_binding_is_a_usage_error_naming_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "k.pem"
    key.write_bytes(b"-----BEGIN TSS2 PRIVATE KEY-----\n")
    monkeypatch.setitem(sys.modules, "tpm2_pytss", None)  # import now raises ImportError
    with pytest.raises(UsageError, match=r"tpm2-pytss") as info:
        load_signer(SignerConfig(certificate=str(tmp_path / "c.pem"), private_key=str(key)))
    assert "pip install tpm2-pytss" in (info.value.hint or "") and "[tpm]" in (info.value.hint or "")


# -- on the software TPM ------------------------------------------------------------------------

@pytest.mark.tpmkey
@pytest.mark.parametrize("name", ["rsa", "ec", "ossl-rsa", "ossl-ec", "rsa-restricted"])
def test_signs_and_the_certificate_verifies(tpmkeys: TpmWithKeyFiles, name: str) -> None:
    key = tpmkeys.keys[name]
    with load_signer(config(key, tpm_key_password=key.password)) as signer:
        assert type(signer).__name__ == "TpmKeySigner"
        assert signer.algorithm == (ALGORITHM_RSA if "rsa" in name else ALGORITHM_ECDSA)
        assert signer.certificate == key.certificate.public_bytes(serialization.Encoding.DER)
        first, second = signer.sign(MESSAGE), signer.sign(b"")
    verify(key.certificate, first)
    verify(key.certificate, second, b"")
    assert tpmkeys.transient_handles() == []  # close() flushed the key; the parent went at load


@pytest.mark.tpmkey
def test_restricted_key_hashes_long_messages_in_the_tpm(tpmkeys: TpmWithKeyFiles) -> None:
    key = tpmkeys.keys["rsa-restricted"]
    long_message = bytes(range(256)) * 9  # 2304 bytes: three TPM2_SequenceUpdate/Complete chunks
    with load_signer(config(key)) as signer:
        verify(key.certificate, signer.sign(long_message), long_message)
        verify(key.certificate, signer.sign(b"x" * 1024), b"x" * 1024)


@pytest.mark.tpmkey
def test_password_from_the_environment_and_from_the_callback(tpmkeys: TpmWithKeyFiles,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    key = tpmkeys.keys["ec"]
    monkeypatch.setenv("RAH_TPM_KEY_PASSWORD", "ec-pass")
    with load_signer(config(key)) as signer:
        verify(key.certificate, signer.sign(MESSAGE))
    monkeypatch.delenv("RAH_TPM_KEY_PASSWORD")
    asked: list[str] = []

    def callback(description: str) -> str:
        asked.append(description)
        return "ec-pass"

    with load_signer(config(key, secret_callback=callback)) as signer:
        verify(key.certificate, signer.sign(MESSAGE))
    assert asked == [f"Password for the TPM key {key.path}"]


@pytest.mark.tpmkey
def test_empty_auth_key_never_asks(tpmkeys: TpmWithKeyFiles) -> None:
    def callback(description: str) -> str:
        raise AssertionError("asked for a password")

    key = tpmkeys.keys["rsa"]
    with load_signer(config(key, secret_callback=callback)) as signer:
        verify(key.certificate, signer.sign(MESSAGE))


@pytest.mark.tpmkey
def test_wrong_password_is_sent_once_and_counted_once(tpmkeys: TpmWithKeyFiles) -> None:
    key = tpmkeys.keys["ec-da"]
    assert key.dictionary_attack_protected
    before = tpmkeys.lockout_counter()
    with load_signer(config(key, tpm_key_password="wrong-secret")) as signer:
        with pytest.raises(PinIncorrectError, match="tried once") as first:
            signer.sign(MESSAGE)
        with pytest.raises(PinIncorrectError) as again:  # refused without asking the TPM again
            signer.sign(MESSAGE)
    assert again.value is first.value
    assert "wrong-secret" not in str(first.value) and "wrong-secret" not in (first.value.hint or "")
    assert "dictionary-attack" in str(first.value)
    assert tpmkeys.lockout_counter() == before + 1
    with load_signer(config(key, tpm_key_password="da-pass")) as signer:  # still usable
        verify(key.certificate, signer.sign(MESSAGE))


@pytest.mark.tpmkey
@pytest.mark.parametrize("name", ["ossl-ec", "ec-da"])
def test_no_tpm_key_password_on_a_key_that_has_one_is_refused_before_the_tpm(
        tpmkeys: TpmWithKeyFiles, name: str) -> None:
    """The key file says the key has a password (emptyAuth false): --no-tpm-key-password is
    refused without a try against the TPM's dictionary-attack counter."""
    key = tpmkeys.keys[name]
    before = tpmkeys.lockout_counter()
    with pytest.raises(UsageError, match="says its key has a password"):
        load_signer(config(key, no_tpm_key_password=True))
    assert tpmkeys.lockout_counter() == before


@pytest.mark.tpmkey
def test_an_empty_password_for_a_key_that_has_one_is_never_sent(
        tpmkeys: TpmWithKeyFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tpmkeys.keys["ec-da"]
    before = tpmkeys.lockout_counter()
    with pytest.raises(PinUnavailableError, match="from --tpm-key-password is empty"):
        load_signer(config(key, tpm_key_password=""))
    monkeypatch.setenv("RAH_TPM_KEY_PASSWORD", "")
    with pytest.raises(PinUnavailableError, match="from RAH_TPM_KEY_PASSWORD is empty"):
        load_signer(config(key))
    monkeypatch.delenv("RAH_TPM_KEY_PASSWORD")
    with pytest.raises(PinUnavailableError, match="from the caller's secret callback is empty"):
        load_signer(config(key, secret_callback=lambda description: ""))
    assert tpmkeys.lockout_counter() == before
    with load_signer(config(key, tpm_key_password="da-pass")) as signer:  # nothing was spent
        verify(key.certificate, signer.sign(MESSAGE))


@pytest.mark.tpmkey
def test_an_impossibly_long_password_is_not_sent(tpmkeys: TpmWithKeyFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tpmkeys.keys["ec-da"]
    before = tpmkeys.lockout_counter()
    monkeypatch.setenv("RAH_TPM_KEY_PASSWORD", "p" * 65)
    with pytest.raises(PinIncorrectError, match="from RAH_TPM_KEY_PASSWORD is 65 bytes long") as info:
        load_signer(config(key))
    assert "p" * 65 not in str(info.value)
    assert tpmkeys.lockout_counter() == before


@pytest.mark.tpmkey
def test_both_password_flags_are_a_usage_error(tpmkeys: TpmWithKeyFiles) -> None:
    with pytest.raises(UsageError, match="contradict"):
        load_signer(config(tpmkeys.keys["ec"], tpm_key_password="x", no_tpm_key_password=True))


@pytest.mark.tpmkey
def test_certificate_of_another_key_is_refused_before_the_tpm_is_touched(
    tpmkeys: TpmWithKeyFiles, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RAH_TPM_TCTI", f"swtpm:path={tmp_path}/no-such-socket")
    mismatched = SignerConfig(certificate=str(tpmkeys.keys["ec"].certificate_path),
                              private_key=str(tpmkeys.keys["rsa"].path))
    with pytest.raises(KeyLoadError, match="does not belong to the certificate"):
        load_signer(mismatched)
    with pytest.raises(TokenError, match="Cannot open the TPM through TCTI"):  # the TCTI really is dead
        load_signer(config(tpmkeys.keys["rsa"]))


@pytest.mark.tpmkey
def test_damaged_key_files_are_key_errors(tpmkeys: TpmWithKeyFiles, tmp_path: Path) -> None:
    from tpm2_pytss.tsskey import TSSPrivKey

    good = tpmkeys.keys["rsa"]
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN TSS2 PRIVATE KEY-----\nnot base64 at all!\n-----END TSS2 PRIVATE KEY-----\n")
    with pytest.raises(KeyLoadError, match="not a valid TSS2 PEM key"):
        load_signer(SignerConfig(certificate=str(good.certificate_path), private_key=str(garbage)))
    # The right public part with a private blob the TPM cannot decrypt (as if from another TPM).
    key = TSSPrivKey.from_pem(good.path.read_bytes())
    blob = bytearray(key.private.marshal())
    blob[-1] ^= 0xFF
    from tpm2_pytss.types import TPM2B_PRIVATE

    tampered = TSSPrivKey(TPM2B_PRIVATE.unmarshal(bytes(blob))[0], key.public, key.empty_auth, key.parent)
    foreign = tmp_path / "foreign.pem"
    foreign.write_bytes(tampered.to_pem())
    with pytest.raises(KeyLoadError, match="cannot load the key"):
        load_signer(SignerConfig(certificate=str(good.certificate_path), private_key=str(foreign)))
    assert tpmkeys.transient_handles() == []  # the parent was flushed despite the failure


@pytest.mark.tpmkey
def test_key_under_a_persistent_parent(tpmkeys: TpmWithKeyFiles, tmp_path: Path) -> None:
    from tpm2_pytss.constants import ESYS_TR, TPM2_ECC
    from tpm2_pytss.tsskey import TSSPrivKey
    from tpm2_pytss.types import TPM2B_SENSITIVE_CREATE

    from rolesanywhere_hsm.signers.tpmkey import _primary_template

    handle = 0x81000101
    with tpmkeys.esapi() as ectx:
        primary, *_ = ectx.create_primary(TPM2B_SENSITIVE_CREATE(), _primary_template(ecc=True))
        persistent = ectx.evict_control(ESYS_TR.RH_OWNER, primary, handle)
        ectx.flush_context(primary)
        key = TSSPrivKey.create_ecc(ectx, curveID=TPM2_ECC.NIST_P256, parent=handle)
        ectx.tr_close(persistent)
    try:
        path = tmp_path / "persistent-parent.pem"
        path.write_bytes(key.to_pem())
        cert = tpmkeys.ca.issue_leaf(serialization.load_der_public_key(key.public.publicArea.to_der()), "pp")
        cert_path = tmp_path / "pp.crt.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        with load_signer(SignerConfig(certificate=str(cert_path), private_key=str(path))) as signer:
            verify(cert, signer.sign(MESSAGE))
    finally:
        with tpmkeys.esapi() as ectx:
            ectx.evict_control(ESYS_TR.RH_OWNER, ectx.tr_from_tpmpublic(handle), handle)


@pytest.mark.tpmkey
def test_a_signer_closes_twice_and_refuses_to_sign_when_closed(tpmkeys: TpmWithKeyFiles) -> None:
    signer = load_signer(config(tpmkeys.keys["rsa"]))
    signer.close()
    signer.close()
    with pytest.raises(UsageError, match="closed"):
        signer.sign(MESSAGE)
    assert repr(signer) == "TpmKeySigner(algorithm='AWS4-X509-RSA-SHA256', chain=0)"


@pytest.mark.tpmkey
def test_no_terminal_and_no_password_fails_at_once(tpmkeys: TpmWithKeyFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    from rolesanywhere_hsm.signers import pin

    monkeypatch.setattr(pin, "TTY_PATH", "/nonexistent/tty")
    with pytest.raises(PinUnavailableError, match="no terminal"):
        load_signer(config(tpmkeys.keys["ec"]))


@pytest.mark.tpmkey
def test_concurrent_signatures_share_one_context(tpmkeys: TpmWithKeyFiles) -> None:
    from concurrent.futures import ThreadPoolExecutor

    key = tpmkeys.keys["ec"]
    messages = [MESSAGE + bytes([i]) for i in range(8)]
    with load_signer(config(key, tpm_key_password="ec-pass")) as signer, ThreadPoolExecutor(4) as pool:
        signatures = list(pool.map(signer.sign, messages))
    for message, signature in zip(messages, signatures):
        verify(key.certificate, signature, message)
