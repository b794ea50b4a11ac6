"""boto3 in-process: `boto3_session()` with a key on SoftHSM, against the emulator on loopback.

The workload runs in a child process behind pkcs11-spy, so that token calls are counted for
the whole life of the session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, write_pem
from rolesanywhere_hsm.emulator import Emulator
from rolesanywhere_hsm.settings import ConfigError
from rolesanywhere_hsm._dev.softhsm import SoftHsmToken
from tests.signers.test_pkcs11_spy import SPY, counts, parse_spy_log

pytest.importorskip("boto3")
pytestmark = pytest.mark.softhsm
ROOT = Path(__file__).parents[1]

_WORKLOAD = r"""
import datetime as dt, json, sys, threading, time
import rolesanywhere_hsm
args = json.loads(sys.argv[1])
session = rolesanywhere_hsm.boto3_session(**args["options"])
print(json.dumps({"phase": "created"}), flush=True)
input()  # the parent checks that nothing has happened yet
reads, errors, seen = [], [], set()
lock = threading.Lock()
def work():
    end = time.monotonic() + args["seconds"]
    while time.monotonic() < end:
        try:
            frozen = session.get_credentials().get_frozen_credentials()
            with lock:
                reads.append((frozen.access_key, dt.datetime.now(dt.timezone.utc).isoformat()))
        except Exception as exc:
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
        time.sleep(0.005)
threads = [threading.Thread(target=work) for _ in range(args["threads"])]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"reads": reads, "errors": errors[:5], "error_count": len(errors)}), flush=True)
"""


@pytest.fixture
def chain(intermediate_ca: CertificateAuthority, tmp_path: Path) -> Path:
    return write_pem(tmp_path / "intermediates.pem", intermediate_ca.certificate)


def options(server: Emulator, token: SoftHsmToken, chain: Path, **extra: Any) -> dict[str, Any]:
    return {"certificate": token.uri_for("ec-p256", type="cert"), "intermediates": str(chain),
            "trust_anchor_arn": server.trust_anchor_arn, "profile_arn": server.profile_arn,
            "role_arn": server.role_arn, "endpoint": server.url, **extra}


def test_twenty_threads_over_several_lifetimes_one_login_one_create_session_per_refresh(
    emulator_factory: Callable[..., Emulator], softhsm_token: SoftHsmToken,
    softhsm_env: dict[str, str], chain: Path, tmp_path: Path,
) -> None:
    if not os.path.isfile(SPY):
        pytest.skip("OpenSC's pkcs11-spy.so is not installed")
    server = emulator_factory(credential_lifetime=4)
    log = tmp_path / "spy.log"
    env = dict(softhsm_env, RAH_PKCS11_MODULE=SPY, PKCS11SPY=softhsm_token.module,
               PKCS11SPY_OUTPUT=str(log))
    args = {"options": options(server, softhsm_token, chain), "threads": 20, "seconds": 13}
    child = subprocess.Popen([sys.executable, "-c", _WORKLOAD, json.dumps(args)], env=env, cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    assert child.stdout is not None and child.stdin is not None
    assert json.loads(child.stdout.readline()) == {"phase": "created"}
    # Creating the session touched nothing: no module loaded, no CreateSession.
    assert not log.exists() and server.requests == []
    out, err = child.communicate("\n", timeout=120)
    assert child.returncode == 0, err
    result = json.loads(out.splitlines()[-1])
    assert result["error_count"] == 0, result["errors"]

    issued = {c.access_key_id: c.expiration for c in server.issued}
    assert len(issued) >= 4, "several lifetimes should have needed several refreshes"
    assert len(issued) <= 13 / 4 * 2 + 1, "refreshing far more often than the rule allows"
    assert len(server.requests) == len(issued)  # one CreateSession per refresh, none wasted
    import datetime as dt
    for key, when in result["reads"]:
        assert key in issued
        assert dt.datetime.fromisoformat(when) < issued[key], "a thread read expired credentials"
    assert len({key for key, _ in result["reads"]}) == len(issued)
    n = counts(parse_spy_log(log))
    assert n["C_Login"] == 1
    assert n["C_Sign(real)"] == len(issued)


def test_a_fifteen_minute_session_is_not_refreshed_on_every_call(
    emulator: Emulator, softhsm_token: SoftHsmToken, softhsm_env: dict[str, str], chain: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import rolesanywhere_hsm

    monkeypatch.setenv("RAH_PKCS11_PIN", softhsm_env["RAH_PKCS11_PIN"])
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    session = rolesanywhere_hsm.boto3_session(**options(emulator, softhsm_token, chain,
                                                        session_duration=900))
    first = session.get_credentials().get_frozen_credentials()
    for _ in range(20):
        assert session.get_credentials().get_frozen_credentials() == first
    assert len(emulator.issued) == 1
    assert session.region_name == emulator.region  # no region configured: the trust anchor's


def test_unknown_options_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import rolesanywhere_hsm

    with pytest.raises(ConfigError) as caught:
        rolesanywhere_hsm.boto3_session(certificate="c.pem", trust_anchor="x")
    assert "trust_anchor" in caught.value.message
    assert "trust_anchor_arn" in (caught.value.hint or "")


def test_a_profile_supplies_the_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rolesanywhere_hsm.botocore_provider import spec_from_options

    config = tmp_path / "config.toml"
    config.write_text(
        '[profiles.dev]\ncertificate = "c.pem"\n'
        'trust-anchor-arn = "arn:aws:rolesanywhere:eu-west-1:111122223333:trust-anchor/0b0a1c7e-1111-4222-8333-944445555666"\n'
        'profile-arn = "arn:aws:rolesanywhere:eu-west-1:111122223333:profile/0b0a1c7e-1111-4222-8333-944445555667"\n'
        'role-arn = "arn:aws:iam::111122223333:role/R"\nsession-duration = 900\n')
    spec = spec_from_options("dev", {"RAH_CONFIG": str(config)}, session_duration=1800)
    assert spec.duration_seconds == 1800 and spec.signing_region == "eu-west-1"


def test_boto3_session_unlocks_a_tpm_key_file_with_tpm_key_password(tpmkeys: Any) -> None:
    """The keyword reaches the TPM key file signer (it was accepted and dropped: the key then
    asked for its password, here a callback that fails the test)."""
    from rolesanywhere_hsm import boto3_session
    from rolesanywhere_hsm.emulator import EmulatorConfig

    key = tpmkeys.keys["ec"]
    assert key.password == "ec-pass"

    def no_prompt(what: str) -> str:
        raise AssertionError(f"asked for a secret although tpm_key_password was given: {what}")

    with Emulator(EmulatorConfig.for_certificates([tpmkeys.ca.certificate])) as server:
        session = boto3_session(certificate=str(key.certificate_path), private_key=str(key.path),
                                tpm_key_password="ec-pass", secret_callback=no_prompt,
                                trust_anchor_arn=server.trust_anchor_arn, profile_arn=server.profile_arn,
                                role_arn=server.role_arn, endpoint=server.url)
        frozen = session.get_credentials().get_frozen_credentials()
        assert frozen.access_key == server.last_issued.access_key_id


def test_spec_from_options_refuses_a_secret_rather_than_drop_it() -> None:
    from rolesanywhere_hsm.botocore_provider import spec_from_options

    with pytest.raises(ConfigError, match="tpm_key_password is a secret") as raised:
        spec_from_options(certificate="c.pem", tpm_key_password="pw")
    assert "pw" not in str(raised.value.diagnostics())
