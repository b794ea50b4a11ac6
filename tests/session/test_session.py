"""CredentialSpec on plain data; CredentialSession with a SoftHSM key against the emulator."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, write_pem
from rolesanywhere_hsm.emulator import Emulator
from rolesanywhere_hsm.errors import ArnError, PinIncorrectError, PinUnavailableError, UsageError
from rolesanywhere_hsm.refresh import RefreshingCredentials
from rolesanywhere_hsm.session import CredentialSession, CredentialSpec, RememberedSecret
from rolesanywhere_hsm._dev.softhsm import SoftHsmToken
from tests.fixtures.softhsm import SOFTHSM_PIN

ROOT = Path(__file__).parents[2]
ANCHOR = "arn:aws:rolesanywhere:eu-west-1:111122223333:trust-anchor/11111111-2222-3333-4444-555555555555"
PROFILE = "arn:aws:rolesanywhere:eu-west-1:111122223333:profile/11111111-2222-3333-4444-666666666666"
ROLE = "arn:aws:iam::111122223333:role/Workload"


def spec(**changes: Any) -> CredentialSpec:
    fields: dict[str, Any] = dict(certificate="pkcs11:token=t;object=k", trust_anchor_arn=ANCHOR,
                                  profile_arn=PROFILE, role_arn=ROLE)
    fields.update(changes)
    return CredentialSpec(**fields)


# -- the spec ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "error", "text"),
    [
        ({"trust_anchor_arn": "arn:aws:s3:::bucket"}, ArnError, "rolesanywhere"),
        ({"region": "us-east-1"}, ArnError, "eu-west-1"),
        ({"duration_seconds": 899}, UsageError, "899"),
        ({"duration_seconds": 43201}, UsageError, "43201"),
        ({"duration_seconds": True}, UsageError, "True"),
        ({"role_session_name": "a"}, UsageError, "role session name"),
        ({"role_session_name": "has space"}, UsageError, "role session name"),
        ({"timeout": 0}, UsageError, "timeout"),
        ({"certificate": ""}, UsageError, "certificate"),
    ],
)
def test_spec_validates_once_with_a_clear_message(changes: dict[str, Any], error: type, text: str) -> None:
    with pytest.raises(error) as info:
        spec(**changes)
    assert text in info.value.message


def test_a_cert_selector_stands_in_for_the_certificate() -> None:
    chosen = spec(certificate=None, cert_selector="Key=x509Serial,Value=0A")
    assert chosen.selector.serial == 10
    config = chosen.signer_config()
    assert config.certificate is None and config.cert_selector is chosen.selector
    from rolesanywhere_hsm.signers.base import signer_kind

    assert signer_kind(config) == "pkcs11"  # searched on the tokens
    with pytest.raises(UsageError, match="No certificate was given"):
        spec(certificate=None)


def test_spec_is_frozen_and_knows_its_region() -> None:
    value = spec(region="eu-west-1", role_session_name="ci-job.1")
    assert value.signing_region == "eu-west-1"
    with pytest.raises(AttributeError, match="frozen"):
        value.duration_seconds = 900  # type: ignore[misc]


def test_cache_key_is_stable_and_changes_with_what_matters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_ROLESANYWHERE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    base = spec()
    assert base.cache_key() == spec().cache_key()
    assert len(base.cache_key()) == 64
    for changes in ({"duration_seconds": 900}, {"role_session_name": "other"},
                    {"endpoint": "http://127.0.0.1:1"}, {"certificate": "pkcs11:token=t;object=j"},
                    {"verify": False}, {"trust_env": False}):
        assert spec(**changes).cache_key() != base.cache_key(), changes
    base_key = base.cache_key()
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://example.test")
    assert spec().cache_key() != base_key
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    # A PIN in the URI is not part of the key (it could be recovered from the hash).
    assert spec(certificate="pkcs11:token=t;object=k?pin-value=1234").cache_key() == \
        spec(certificate="pkcs11:token=t;object=k?pin-value=9999").cache_key()
    # A certificate file replaced in place gives a new key.
    cert = tmp_path / "leaf.pem"
    cert.write_text("one")
    first = spec(certificate=str(cert)).cache_key()
    cert.write_text("two, longer")
    assert spec(certificate=str(cert)).cache_key() != first


def test_cache_key_loads_no_token_module() -> None:
    code = (
        "import sys\n"
        "from rolesanywhere_hsm.session import CredentialSpec\n"
        f"CredentialSpec(certificate='pkcs11:token=t', trust_anchor_arn={ANCHOR!r}, "
        f"profile_arn={PROFILE!r}, role_arn={ROLE!r}).cache_key()\n"
        "print(sorted(m for m in ('pkcs11', 'httpx', 'cryptography') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- the session against the emulator with a SoftHSM key ----------------------------------------------


@pytest.fixture
def chain_file(intermediate_ca: CertificateAuthority, tmp_path: Path) -> Path:
    return write_pem(tmp_path / "intermediates.pem", intermediate_ca.certificate)


def token_spec(emulator: Emulator, token: SoftHsmToken, chain: Path, **changes: Any) -> CredentialSpec:
    fields: dict[str, Any] = dict(
        certificate=token.uri_for("ec-p256", type="cert"), intermediates=str(chain),
        trust_anchor_arn=emulator.trust_anchor_arn, profile_arn=emulator.profile_arn,
        role_arn=emulator.role_arn, endpoint=emulator.url, timeout=20,
    )
    fields.update(changes)
    return CredentialSpec(**fields)


@pytest.mark.softhsm
def test_one_login_serves_many_fetches(emulator: Emulator, softhsm_token: SoftHsmToken, chain_file: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAH_PKCS11_PIN", SOFTHSM_PIN)
    with CredentialSession(token_spec(emulator, softhsm_token, chain_file)) as session:
        keys = {session.fetch().access_key_id for _ in range(3)}
        signer = session._signer
        assert signer is not None
        assert (signer.login_count, signer.sign_count) == (1, 3)  # type: ignore[attr-defined]
    assert session.open_count == 1 and len(keys) == 3
    assert {i.access_key_id for i in emulator.issued} == keys


@pytest.mark.softhsm
def test_a_dropped_token_session_is_reopened_once(emulator: Emulator, softhsm_token: SoftHsmToken,
                                                  chain_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAH_PKCS11_PIN", SOFTHSM_PIN)
    with CredentialSession(token_spec(emulator, softhsm_token, chain_file)) as session:
        session.fetch()
        # The token forgets the session (as after a pcscd restart): its handle becomes invalid.
        session._signer._session.close()  # type: ignore[union-attr]
        session.fetch()
        assert session.open_count == 2 and session.fetch_count == 2
    assert len(emulator.issued) == 2


@pytest.mark.softhsm
def test_a_refused_pin_is_never_presented_again(emulator: Emulator, softhsm_token: SoftHsmToken,
                                                chain_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def wrong(description: str) -> str:
        asked.append(description)
        return "wrong-pin-1"

    with CredentialSession(token_spec(emulator, softhsm_token, chain_file), secret_callback=wrong) as session:
        with pytest.raises(PinIncorrectError):
            session.fetch()
        monkeypatch.setenv("RAH_PKCS11_PIN", SOFTHSM_PIN)  # even a good source is not tried now
        with pytest.raises(PinIncorrectError, match="stopped"):
            session.fetch()
    assert len(asked) == 1 and session.open_count == 0
    assert emulator.requests == []


@pytest.mark.softhsm
def test_no_prompt_from_a_background_thread(emulator: Emulator, softhsm_token: SoftHsmToken,
                                            chain_file: Path) -> None:
    errors: list[BaseException] = []
    with CredentialSession(token_spec(emulator, softhsm_token, chain_file)) as session:
        thread = threading.Thread(target=lambda: _catch(session.fetch, errors))
        thread.start()
        thread.join(30)
    assert len(errors) == 1 and isinstance(errors[0], PinUnavailableError)
    assert "background" in errors[0].message


def _catch(call: Any, errors: list[BaseException]) -> None:
    try:
        call()
    except BaseException as exc:  # noqa: BLE001
        errors.append(exc)


@pytest.mark.softhsm
def test_remembered_pin_asked_once_in_the_main_thread(emulator: Emulator, softhsm_token: SoftHsmToken,
                                                      chain_file: Path) -> None:
    asked: list[str] = []
    secret = RememberedSecret(lambda description: asked.append(description) or SOFTHSM_PIN)
    with CredentialSession(token_spec(emulator, softhsm_token, chain_file), secret_callback=secret) as session:
        session.open()  # at start, in the main thread
        assert len(asked) == 1
        creds = RefreshingCredentials(session.fetch).start()
        try:
            assert creds.wait_ready(30)
            session._signer._session.close()  # type: ignore[union-attr]
            session.fetch()  # the re-login is answered from memory
        finally:
            creds.close()
        assert session.open_count == 2
    assert len(asked) == 1
    assert "held=True" in repr(secret) and SOFTHSM_PIN not in repr(secret)
