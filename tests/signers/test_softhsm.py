"""The throwaway SoftHSM2 token builder: keys made on the token, certificates beside them."""

from __future__ import annotations

import pytest

from rolesanywhere_hsm._dev.devpki import CertificateAuthority
from rolesanywhere_hsm.signers.base import SignerConfig
from rolesanywhere_hsm.signers.pkcs11 import open_pkcs11_signer
from rolesanywhere_hsm._dev.softhsm import SoftHsmError, SoftHsmToken
from tests.fixtures.softhsm import SOFTHSM_PIN, TEMPLATE_KEYS

pytestmark = pytest.mark.softhsm


def test_private_keys_are_sensitive_non_extractable_and_generated_on_the_token(
    softhsm_token: SoftHsmToken,
) -> None:
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    with softhsm_token._session() as session:  # noqa: SLF001 (inspecting the builder itself)
        keys = list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}))
        assert len(keys) == len(TEMPLATE_KEYS)
        for key in keys:
            assert key[Attribute.SENSITIVE] and key[Attribute.ALWAYS_SENSITIVE]
            assert not key[Attribute.EXTRACTABLE] and key[Attribute.NEVER_EXTRACTABLE]
            assert key[Attribute.LOCAL]  # generated inside, not imported
            assert key[Attribute.ID] and key[Attribute.LABEL]
            with pytest.raises(pkcs11.AttributeSensitive):
                key[Attribute.PRIVATE_EXPONENT if key.key_type == pkcs11.KeyType.RSA else Attribute.VALUE]
        ids = {c[Attribute.ID] for c in session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE})}
        assert ids == {key_id for _, key_id, _, options in TEMPLATE_KEYS
                       if options.get("store_certificate", True)}
        always = [k[Attribute.LABEL] for k in keys if k[Attribute.ALWAYS_AUTHENTICATE]]
        assert always == ["always-auth"]


def test_the_template_is_made_by_keygen_and_import_certificate(softhsm_token: SoftHsmToken) -> None:
    """The test tokens are made by the code users run: keygen's keys are locked (CKA_MODIFIABLE
    false) and signing only (CKA_DECRYPT false); only the layouts keygen refuses (a reused
    label, P-521, always-authenticate) are made directly. import-certificate's objects carry
    the CKA_ISSUER and CKA_SERIAL_NUMBER other tools search by."""
    from pkcs11 import Attribute, ObjectClass

    direct = {b"\x04", b"\x09", b"\x0a"}  # always-auth, the second "dup", ec-p521
    with softhsm_token._session() as session:  # noqa: SLF001 (inspecting the builder itself)
        keys = list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}))
        by_keygen = {bytes(k[Attribute.ID]) for k in keys
                     if not k[Attribute.MODIFIABLE] and not k[Attribute.DECRYPT]}
        assert by_keygen == {bytes(k[Attribute.ID]) for k in keys} - direct
        for cert in session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE}):
            assert cert[Attribute.ISSUER] and cert[Attribute.SERIAL_NUMBER]


def test_create_add_key_and_uri(tmp_path, intermediate_ca: CertificateAuthority,
                                monkeypatch: pytest.MonkeyPatch, softhsm_module: str) -> None:
    token = SoftHsmToken.create(tmp_path / "hsm", "demo ✓", SOFTHSM_PIN, "so-pin-1", module=softhsm_module)
    certificate, uri = token.add_key("p256", "workload", b"\x10", intermediate_ca)
    assert uri == "pkcs11:token=demo%20%E2%9C%93;object=workload;type=private"
    assert token.uri_for("workload", type="cert", serial=True) == (
        f"pkcs11:token=demo%20%E2%9C%93;serial={token.serial};object=workload;type=cert")
    assert token.keys["workload"].certificate == certificate
    assert token.env == {"SOFTHSM2_CONF": str(tmp_path / "hsm" / "softhsm2.conf")}
    assert SOFTHSM_PIN not in repr(token)
    monkeypatch.setenv("SOFTHSM2_CONF", str(token.conf))
    monkeypatch.setenv("RAH_PKCS11_MODULE", softhsm_module)
    monkeypatch.setenv("RAH_PKCS11_PIN", SOFTHSM_PIN)
    with open_pkcs11_signer(SignerConfig(certificate=token.uri_for("workload", type="cert"))) as signer:
        assert signer.certificate == token.keys["workload"].certificate_der
        # The builder refuses to re-initialise SoftHSM under an open signer (trap 1).
        with pytest.raises(SoftHsmError, match="signer on SoftHSM is open"):
            token.add_key("p256", "second", b"\x11", intermediate_ca)
        signer.sign(b"m")


def test_default_ca_and_unknown_kind(tmp_path, softhsm_module: str) -> None:
    with pytest.raises(ValueError, match="so_pin of 4 to 255"):
        SoftHsmToken.create(tmp_path / "hsm", "t", SOFTHSM_PIN, "so", module=softhsm_module)
    token = SoftHsmToken.create(tmp_path / "hsm", "t", SOFTHSM_PIN, "so-pin", module=softhsm_module)
    certificate, _ = token.add_key("p384", "k", b"\x01")
    assert token.ca is not None and certificate.issuer == token.ca.certificate.subject
    with pytest.raises(ValueError, match="unknown key kind"):
        token.add_key("ed25519", "k2", b"\x02")


def test_clone_is_independent(softhsm_template: SoftHsmToken, tmp_path) -> None:
    clone = softhsm_template.copy_to(tmp_path / "clone")
    assert clone.serial == softhsm_template.serial and clone.keys == softhsm_template.keys
    assert clone.conf.read_text().count(str(tmp_path / "clone" / "tokens")) == 1
    assert (clone.directory / "tokens").is_dir() and clone.directory != softhsm_template.directory


def test_make_token_script(tmp_path, softhsm_module: str) -> None:
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parents[2]
    env = {k: v for k, v in os.environ.items() if k != "RAH_PKCS11_PIN"}
    done = subprocess.run([sys.executable, str(root / "softhsm-fixtures" / "make-token"),
                           str(tmp_path / "hsm"), "--keys", "p256", "--json"],
                          env=env, capture_output=True, text=True, timeout=60, check=True)
    facts = json.loads(done.stdout)
    pin = (tmp_path / "hsm" / "user-pin").read_text().strip()
    assert pin and pin not in done.stdout  # the PIN is only in the 0600 file
    assert (tmp_path / "hsm" / "user-pin").stat().st_mode & 0o077 == 0
    uri = facts["keys"][0]["certificate_uri"]
    assert uri.endswith(f"?pin-source=file:{tmp_path / 'hsm' / 'user-pin'}")
    script = ("import sys\nfrom rolesanywhere_hsm.signers.base import SignerConfig, load_signer\n"
              "with load_signer(SignerConfig(certificate=sys.argv[1])) as s: print(len(s.sign(b'x')) > 0)")
    signed = subprocess.run([sys.executable, "-c", script, uri], env={**env, **facts["env"]}, cwd=root,
                            capture_output=True, text=True, timeout=60, start_new_session=True)
    assert signed.stdout.strip() == "True", signed.stderr


def test_make_token_twice_on_one_directory_refuses_and_keeps_the_first(tmp_path, softhsm_module: str) -> None:
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parents[2]
    env = {k: v for k, v in os.environ.items() if k != "RAH_PKCS11_PIN"}
    command = [sys.executable, str(root / "softhsm-fixtures" / "make-token"), str(tmp_path / "hsm"),
               "--keys", "p256", "--json"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=True)
    facts = json.loads(first.stdout)
    before = {name: (tmp_path / "hsm" / name).read_bytes() for name in ("user-pin", "so-pin", "ca.pem",
                                                                        "softhsm2.conf")}
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 2 and second.stdout == ""
    assert "already holds a token" in second.stderr and "new directory" in second.stderr
    assert {name: (tmp_path / "hsm" / name).read_bytes() for name in before} == before
    script = ("import sys\nfrom rolesanywhere_hsm.signers.base import SignerConfig, load_signer\n"
              "with load_signer(SignerConfig(certificate=sys.argv[1])) as s: print(len(s.sign(b'x')) > 0)")
    signed = subprocess.run([sys.executable, "-c", script, facts["keys"][0]["certificate_uri"]],
                            env={**env, **facts["env"]}, cwd=root, capture_output=True, text=True,
                            timeout=60, start_new_session=True)
    assert signed.stdout.strip() == "True", signed.stderr  # the first token still opens with its PIN file
