"""doctor against the emulator over real HTTP on loopback, with key files, a SoftHSM token and
the software TPM: one passing run, and a test for each failure it must find and name."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, new_private_key, write_pem
from rolesanywhere_hsm.doctor import EXIT_CHECK_FAILED, FAIL, PASS, WARN, DoctorOptions, run_doctor
from rolesanywhere_hsm.emulator import Emulator
from rolesanywhere_hsm.signers.base import SignerConfig
from tests.fixtures.pki import LeafFiles
from tests.fixtures.softhsm import SOFTHSM_PIN
from tests.clirunner import run_cli

ROOT = Path(__file__).parents[2]


def doctor(emulator: Emulator, certificate: str, key: str | None = None, **kwargs: Any) -> dict[str, Any]:
    signer_kwargs = {k: kwargs.pop(k) for k in ("intermediates",) if k in kwargs}
    options = DoctorOptions(
        signer=SignerConfig(certificate=certificate, private_key=key, **signer_kwargs),
        trust_anchor_arn=kwargs.pop("trust_anchor_arn", emulator.trust_anchor_arn),
        profile_arn=emulator.profile_arn, role_arn=emulator.role_arn,
        endpoint=kwargs.pop("endpoint") if "endpoint" in kwargs else emulator.url, **kwargs,
    )
    checks = run_doctor(options)
    names = [c.name for c in checks]
    assert len(names) == len(set(names)), names  # each check reported once
    return {c.name: c for c in checks}


@pytest.fixture
def ca_file(root_ca: CertificateAuthority, tmp_path: Path) -> str:
    return str(write_pem(tmp_path / "anchor.pem", root_ca.certificate))


def test_file_key_passes_every_check_and_calls(emulator: Emulator, leaf_files: dict[str, LeafFiles],
                                               ca_file: str) -> None:
    leaf = leaf_files["p384"]  # issued by the intermediate
    checks = doctor(emulator, str(leaf.certificate), str(leaf.key), intermediates=str(leaf.chain),
                    trust_anchor_ca=ca_file, call=True)
    assert {c.status for c in checks.values()} <= {PASS, "skip"}, checks
    assert checks["call"].status == PASS and emulator.last_issued.leaf_serial == leaf.cert.serial_number
    assert checks["chain-path"].status == PASS and "Intermediate" in checks["chain-path"].message
    assert checks["module"].status == "skip"


def test_expired_certificate(emulator: Emulator, root_ca: CertificateAuthority, tmp_path: Path,
                             ca_file: str) -> None:
    key = new_private_key("p256")
    now = dt.datetime.now(dt.timezone.utc)
    cert = root_ca.issue_leaf(key.public_key(), "old", not_before=now - dt.timedelta(days=60),
                              not_after=now - dt.timedelta(days=1))
    checks = doctor(emulator, str(write_pem(tmp_path / "c.pem", cert)),
                    str(write_pem(tmp_path / "k.pem", key, mode=0o600)), trust_anchor_ca=ca_file, call=True)
    assert checks["validity"].status == FAIL and "expired" in checks["validity"].message
    assert "Renew" in checks["validity"].fix
    assert checks["signature"].status == PASS  # the key itself is fine
    assert checks["call"].status == FAIL and "Untrusted" in checks["call"].message
    assert checks["call"].fix == "See the validity check(s) above."


def test_certificate_breaking_leaf_rules(emulator: Emulator, root_ca: CertificateAuthority,
                                         tmp_path: Path) -> None:
    key = new_private_key("p256")
    cert = root_ca.issue_leaf(key.public_key(), None, key_usage=("key_encipherment",))
    checks = doctor(emulator, str(write_pem(tmp_path / "c.pem", cert)),
                    str(write_pem(tmp_path / "k.pem", key, mode=0o600)))
    leaf = checks["leaf"]
    assert leaf.status == FAIL and "digitalSignature" in leaf.message and "empty subject" in leaf.message
    assert "subject" in leaf.fix and "digitalSignature" in leaf.fix


def test_key_that_does_not_match(emulator: Emulator, leaf_files: dict[str, LeafFiles]) -> None:
    checks = doctor(emulator, str(leaf_files["p256"].certificate), str(leaf_files["p384"].key))
    assert checks["key"].status == FAIL and checks["key"].fix
    assert checks["signature"].status == "skip" and checks["call"].status == "skip"


def test_chain_missing_its_intermediate(emulator: Emulator, leaf_files: dict[str, LeafFiles],
                                        ca_file: str) -> None:
    leaf = leaf_files["p384"]
    checks = doctor(emulator, str(leaf.certificate), str(leaf.key), trust_anchor_ca=ca_file, call=True)
    path = checks["chain-path"]
    assert path.status == FAIL and "Intermediate" in path.fix and "--intermediates" in path.fix
    assert checks["call"].status == FAIL  # the emulator agrees
    assert checks["call"].fix == "See the chain-path check(s) above."


def test_chain_in_the_wrong_order(emulator_factory: Any, root_ca: CertificateAuthority, tmp_path: Path,
                                  ca_file: str) -> None:
    upper = root_ca.issue_intermediate("Upper CA", "p256")
    lower = upper.issue_intermediate("Lower CA", "p256")
    key = new_private_key("p256")
    leaf = lower.issue_leaf(key.public_key(), "w")
    bundle = write_pem(tmp_path / "chain.pem", upper.certificate, lower.certificate)  # wrong order
    emulator = emulator_factory()
    checks = doctor(emulator, str(write_pem(tmp_path / "c.pem", leaf)),
                    str(write_pem(tmp_path / "k.pem", key, mode=0o600)), intermediates=str(bundle),
                    trust_anchor_ca=ca_file, call=True)
    order = checks["chain-order"]
    assert order.status == WARN and "Upper CA" in order.message and "issuer first" in order.fix
    assert checks["chain-path"].status == PASS and checks["call"].status == PASS  # we reorder


def test_region_mismatch(emulator: Emulator, leaf_files: dict[str, LeafFiles]) -> None:
    leaf = leaf_files["p256"]
    checks = doctor(emulator, str(leaf.certificate), str(leaf.key), region="eu-west-1", call=True)
    assert checks["region"].status == FAIL and "us-east-1" in checks["region"].message
    assert "--region" in checks["region"].fix
    assert checks["endpoint"].status == "skip" and checks["call"].status == "skip"
    endpoint = doctor(emulator, str(leaf.certificate), str(leaf.key),
                      endpoint="https://rolesanywhere.eu-west-1.amazonaws.com")
    assert endpoint["region"].status == FAIL and "eu-west-1" in endpoint["region"].message


def test_malformed_arn(emulator: Emulator, leaf_files: dict[str, LeafFiles]) -> None:
    leaf = leaf_files["p256"]
    checks = doctor(emulator, str(leaf.certificate), str(leaf.key), trust_anchor_arn="arn:aws:nope")
    assert checks["arns"].status == FAIL and checks["region"].status == "skip"


def test_clock_skew_against_the_emulator(emulator: Emulator, leaf_files: dict[str, LeafFiles]) -> None:
    emulator.shift_clock(-600)  # the endpoint's clock is 10 minutes behind ours
    leaf = leaf_files["p256"]
    checks = doctor(emulator, str(leaf.certificate), str(leaf.key), call=True)
    clock = checks["clock"]
    # The Date header has whole seconds: 600 or 601 s.
    assert clock.status == FAIL and re.search(r"60[01] s ahead of", clock.message)
    assert "time synchronisation" in clock.fix
    assert checks["call"].status == FAIL and "Invalid signature" in checks["call"].message
    assert checks["call"].fix == "See the clock check above."


def test_endpoint_not_answering(emulator: Emulator, leaf_files: dict[str, LeafFiles]) -> None:
    leaf = leaf_files["p256"]
    url = emulator.url
    emulator.stop()
    checks = doctor(emulator, str(leaf.certificate), str(leaf.key), endpoint=url)
    assert checks["endpoint"].status == FAIL and "cannot connect" in checks["endpoint"].message
    assert checks["clock"].status == "skip"


def test_tls_endpoint_verified_only_with_its_ca(emulator_tls: Emulator, emulator_tls_ca_file: Path,
                                                leaf_files: dict[str, LeafFiles]) -> None:
    leaf = leaf_files["p256"]
    bad = doctor(emulator_tls, str(leaf.certificate), str(leaf.key))
    assert bad.get("endpoint").status == FAIL and "--ca-bundle" in bad["endpoint"].fix
    good = doctor(emulator_tls, str(leaf.certificate), str(leaf.key), verify=str(emulator_tls_ca_file))
    assert good["endpoint"].status == PASS and "TLS verified" in good["endpoint"].message
    assert good["clock"].status == PASS


def test_proxy_from_the_environment_is_reported(emulator: Emulator, leaf_files: dict[str, LeafFiles],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://user:secret@127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://user:secret@127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    leaf = leaf_files["p256"]
    checks = doctor(emulator, str(leaf.certificate), str(leaf.key))
    assert "127.0.0.1:9" in checks["proxy"].message and "secret" not in checks["proxy"].message
    assert checks["endpoint"].status == FAIL  # nothing listens on the proxy's port
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = doctor(emulator, str(leaf.certificate), str(leaf.key))
    assert "direct" in direct["proxy"].message and direct["endpoint"].status == PASS
    assert "direct" in doctor(emulator, str(leaf.certificate), str(leaf.key),
                              trust_env=False)["proxy"].message


# --- tokens -------------------------------------------------------------------------------------


@pytest.mark.softhsm
def test_absent_token(emulator: Emulator, softhsm_token: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAH_PKCS11_PIN", SOFTHSM_PIN)
    checks = doctor(emulator, "pkcs11:token=not-here;object=ec-p256;type=cert")
    assert checks["module"].status == PASS
    token = checks["token"]
    assert token.status == FAIL and "not-here" in token.message and "rah-test" in token.message
    assert token.code == "RAH-SEL-001"  # what credential-process exits with for the same URI
    assert checks["key"].status == "skip" and checks["signature"].status == "skip"


@pytest.mark.softhsm
def test_softhsm_pin_source_missing_is_found_before_any_login(
        emulator: Emulator, softhsm_token: Any, tmp_path: Path) -> None:
    uri = softhsm_token.uri_for("ec-p256", type="cert", pin_source=f"file:{tmp_path / 'nope'}")
    checks = doctor(emulator, uri)
    assert checks["certificate"].status == PASS
    assert checks["pin"].status == FAIL and "nope" in checks["pin"].message
    assert checks["key"].status == "skip"


@pytest.mark.softhsm
def test_softhsm_wrong_pin_is_tried_once(emulator: Emulator, softhsm_token: Any,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAH_PKCS11_PIN", "wrong-pin")
    checks = doctor(emulator, softhsm_token.uri_for("ec-p256", type="cert"))
    assert checks["pin"].status == PASS  # a PIN is there; whether it is right, the login says
    key = checks["key"]
    assert key.status == FAIL and "login refused" in key.message and "not retried" in key.message


@pytest.mark.softhsm
def test_softhsm_ambiguous_certificate(emulator: Emulator, softhsm_token: Any,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAH_PKCS11_PIN", SOFTHSM_PIN)
    checks = doctor(emulator, "pkcs11:token=rah-test;object=dup;type=cert")
    assert checks["certificate"].status == FAIL and "2 certificates" in checks["certificate"].message


@pytest.mark.softhsm
def test_softhsm_passes_with_call_through_the_cli(
        emulator: Emulator, softhsm_token: Any, softhsm_env: dict[str, str],
        intermediate_ca: CertificateAuthority, ca_file: str, tmp_path: Path) -> None:
    chain = write_pem(tmp_path / "chain.pem", intermediate_ca.certificate)
    args = ["doctor",
            "--certificate", softhsm_token.uri_for("rsa-2048", type="cert"),
            "--intermediates", str(chain), "--trust-anchor-ca", ca_file,
            "--trust-anchor-arn", emulator.trust_anchor_arn, "--profile-arn", emulator.profile_arn,
            "--role-arn", emulator.role_arn, "--endpoint", emulator.url, "--call"]
    human = run_cli(*args, env=softhsm_env, cwd=ROOT)
    assert human.returncode == 0, human.stdout + human.stderr
    assert "[ok  ] call" in human.stdout and human.stdout.rstrip().endswith("No check failed.")
    assert SOFTHSM_PIN not in human.stdout + human.stderr
    assert emulator.last_issued.access_key_id not in human.stdout  # no secrets, not even the key id
    result = run_cli(*args, "--json", env=softhsm_env, cwd=ROOT)
    payload = json.loads(result.stdout)
    assert payload["ok"] is True and result.returncode == 0
    statuses = {c["name"]: c["status"] for c in payload["checks"]}
    for name in ("module", "token", "certificate", "pin", "key", "signature", "algorithm", "leaf",
                 "validity", "chain-order", "chain-length", "chain-path", "arns", "region", "proxy",
                 "endpoint", "clock", "call"):
        assert statuses[name] == PASS, (name, payload)


@pytest.mark.softhsm
def test_cli_exit_code_and_json_on_failure(emulator: Emulator, softhsm_env: dict[str, str]) -> None:
    args = ["doctor",
            "--certificate", "pkcs11:token=not-here;type=cert", "--json",
            "--trust-anchor-arn", emulator.trust_anchor_arn, "--profile-arn", emulator.profile_arn,
            "--role-arn", emulator.role_arn, "--endpoint", emulator.url]
    result = run_cli(*args, env=softhsm_env, cwd=ROOT)
    assert result.returncode == EXIT_CHECK_FAILED, result.stderr
    payload = json.loads(result.stdout)
    assert payload["ok"] is False
    token = next(c for c in payload["checks"] if c["name"] == "token")
    assert token["status"] == FAIL and token["fix"]
    assert "Traceback" not in result.stderr


@pytest.mark.tpm
def test_locked_tpm_token(emulator_factory: Any, tpm: Any) -> None:
    """tpm2-pkcs11 does not flag a locked PIN: the one login finds it, and the fix says how to
    unblock it; no second PIN is presented."""
    import pkcs11

    lib = tpm.open_library()
    try:
        for _ in range(3):
            with pytest.raises(pkcs11.PinIncorrect):
                lib.get_token(token_label=tpm.token_label).open(user_pin="000000")
            lib.reinitialize()  # a failed open() leaks its session
    finally:
        tpm.finalize_in_process()
    emulator = emulator_factory([tpm.ca.certificate])
    before = tpm.lockout_counter()
    checks = doctor(emulator, tpm.uri_for("ec", type="cert", pin=True))
    assert checks["token"].status == PASS  # the flags do not tell
    key = checks["key"]
    assert key.status == FAIL and "locked" in key.message and "PUK" in key.fix
    assert tpm.lockout_counter() == before  # tried once, refused while locked: nothing counted


@pytest.mark.tpm
def test_tpm_passes_with_call(emulator_factory: Any, tpm: Any, monkeypatch: pytest.MonkeyPatch,
                              tmp_path: Path) -> None:
    monkeypatch.setenv("RAH_PKCS11_PIN", tpm.user_pin)
    emulator = emulator_factory([tpm.ca.certificate])
    checks = doctor(emulator, tpm.uri_for("rsa", type="cert"), call=True,
                    trust_anchor_ca=str(write_pem(tmp_path / "ca.pem", tpm.ca.certificate)))
    assert not [c for c in checks.values() if c.status not in (PASS, "skip")], checks
    assert checks["call"].status == PASS and checks["signature"].status == PASS


@pytest.mark.yubikey
@pytest.mark.parametrize("module", ["ykcs11", "opensc"])
def test_virtual_yubikey_passes_with_call(emulator_factory: Any, virtual_yubikey: Any, module: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    yk = virtual_yubikey
    path = yk.ykcs11_module if module == "ykcs11" else yk.opensc_module
    monkeypatch.setenv("RAH_PKCS11_MODULE", path)
    monkeypatch.setenv("RAH_PKCS11_PIN", yk.pin)
    yk.open_library(path)  # drop login state left by earlier tests
    emulator = emulator_factory([yk.ca.certificate])
    yk.clear_counters()
    checks = doctor(emulator, yk.uri_for("9a", path, type="cert", by_label=True), call=True,
                    trust_anchor_ca=str(yk.ca_path))
    assert not [c for c in checks.values() if c.status not in (PASS, "skip")], checks
    assert checks["call"].status == PASS
    status = yk.status()
    assert status["verify_attempts"] == 1  # one login for the test signature and the call
    assert status["signatures"]["9a"] == 2


@pytest.mark.yubikey
def test_yubikey_9e_through_opensc_needs_no_pin(emulator_factory: Any, virtual_yubikey: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    yk = virtual_yubikey
    monkeypatch.setenv("RAH_PKCS11_MODULE", yk.opensc_module)
    monkeypatch.delenv("RAH_PKCS11_PIN", raising=False)
    yk.open_library(yk.opensc_module)
    yk.clear_counters()
    emulator = emulator_factory([yk.ca.certificate])
    checks = doctor(emulator, yk.uri_for("9e", yk.opensc_module, type="cert", by_label=True), call=True)
    assert checks["pin"].status == PASS and "no PIN needed" in checks["pin"].message, checks
    assert checks["call"].status == PASS
    assert yk.status()["verify_attempts"] == 0


def _wrong_pin_once(yk: Any, module: str) -> None:
    import pkcs11

    lib = yk.open_library(module)  # a fresh C_Initialize: a failed open() leaks its session
    with pytest.raises(pkcs11.PinIncorrect):
        lib.get_token(token_label=yk.token_label(module)).open(user_pin="000000")


@pytest.mark.yubikey
def test_yubikey_pin_flags_warn_then_lock_without_a_pin_tried(
        emulator_factory: Any, virtual_yubikey: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The card's own counter proves it: a locked PIN is reported from the token flags and no
    PIN is sent to the card; one wrong try earlier shows as a warning."""
    yk = virtual_yubikey
    module = yk.ykcs11_module
    monkeypatch.setenv("RAH_PKCS11_MODULE", module)
    monkeypatch.setenv("RAH_PKCS11_PIN", yk.pin)
    emulator = emulator_factory([yk.ca.certificate])
    uri = yk.uri_for("9a", module, type="cert", by_label=True)
    try:
        _wrong_pin_once(yk, module)
        yk.open_library(module)
        counted = doctor(emulator, uri)
        assert counted["token"].status == WARN and "wrong tries counted" in counted["token"].message
        assert counted["signature"].status == PASS  # the right PIN, once, resets the counter
        _wrong_pin_once(yk, module)
        _wrong_pin_once(yk, module)
        _wrong_pin_once(yk, module)
        assert yk.pin_retries_left() == 0
        yk.open_library(module)
        yk.clear_counters()
        locked = doctor(emulator, uri)
        assert locked["token"].status == FAIL and "locked" in locked["token"].message
        assert "unblock" in locked["token"].fix.lower() and locked["key"].status == "skip"
        assert locked["token"].code == "RAH-PIN-004"
        assert yk.status()["verify_attempts"] == 0
    finally:
        yk.reset_pin()
        yk.open_library(module)


def test_trust_anchor_holding_another_ca(emulator_factory: Any, leaf_files: dict[str, LeafFiles],
                                         ca_file: str) -> None:
    """The path to the CA the user names is fine, but the service's trust anchor holds another
    CA: the refusal's fix says where to look."""
    other = CertificateAuthority.create("Some Other CA", "p256")
    emulator = emulator_factory([other.certificate])
    leaf = leaf_files["p256"]
    checks = doctor(emulator, str(leaf.certificate), str(leaf.key), trust_anchor_ca=ca_file, call=True)
    assert checks["chain-path"].status == PASS
    assert checks["call"].status == FAIL and "trust anchor holds that CA" in checks["call"].fix


@pytest.mark.softhsm
def test_softhsm_pin_value_warns_and_empty_pin_fails(emulator: Emulator, softhsm_token: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    shown = doctor(emulator, softhsm_token.uri_for("ec-p256", type="cert", pin=True))
    assert shown["pin"].status == WARN and "pin-source" in shown["pin"].fix
    assert shown["signature"].status == PASS
    assert SOFTHSM_PIN not in " ".join(c.message + c.fix for c in shown.values())
    monkeypatch.setenv("RAH_PKCS11_PIN", "")
    empty = doctor(emulator, softhsm_token.uri_for("ec-p256", type="cert"))
    assert empty["pin"].status == FAIL and "empty" in empty["pin"].message
    assert empty["key"].status == "skip"  # an empty PIN is never sent


def test_chain_path_never_proposes_sending_a_root_already_given(
        emulator: Emulator, root_ca: CertificateAuthority, tmp_path: Path) -> None:
    """The leaf chains to root_ca, whose certificate is in the bundle (as it is on a token
    after `import-certificate --chain`), but the trust anchor is another CA: sending the
    root cannot help, and the fix must not say so."""
    key = new_private_key("p256")
    cert = root_ca.issue_leaf(key.public_key(), "rooted")
    bundle = write_pem(tmp_path / "bundle.pem", root_ca.certificate)
    other = write_pem(tmp_path / "other-anchor.pem", CertificateAuthority.create("Other Root").certificate)
    checks = doctor(emulator, str(write_pem(tmp_path / "c.pem", cert)),
                    str(write_pem(tmp_path / "k.pem", key, mode=0o600)), intermediates=str(bundle),
                    trust_anchor_ca=str(other))
    path = checks["chain-path"]
    assert path.status == FAIL
    assert "is a root CA: sending it does not help" in path.fix and "Send the intermediate" not in path.fix


def test_path_fix_on_plain_data() -> None:
    from rolesanywhere_hsm.doctor.certificate import path_fix

    assert path_fix("CN=I", False).startswith("Send the intermediate CA 'CN=I' with --intermediates")
    assert "does not help" in path_fix("CN=R", True) and "--intermediates" not in path_fix("CN=R", True)
    unknown = path_fix("CN=X", None)
    assert "If 'CN=X' is an intermediate CA" in unknown and "already on the token" in unknown


@pytest.mark.softhsm
def test_every_problem_visible_without_a_pin_is_reported_in_one_run_with_no_login(
        emulator: Emulator, softhsm_factory: Any, intermediate_ca: CertificateAuthority,
        ca_file: str, tmp_path: Path) -> None:
    """An expired leaf on the token AND a chain (from the token's CA certificates: none here)
    that does not reach the trust anchor's CA: one doctor run reports both, and pkcs11-spy,
    between doctor and SoftHSM, shows that no C_Login was made (the PIN source does not
    answer, so the key check waits for it; the certificate and chain checks do not)."""
    import os
    import subprocess
    import sys

    from tests.signers.spylog import SPY, counts, parse_spy_log

    if not os.path.isfile(SPY):
        pytest.skip("OpenSC's pkcs11-spy.so is not installed")
    token = softhsm_factory("rah-doctor", [])
    certificate, _ = token.add_key("p256", "old", b"\x01", intermediate_ca, store_certificate=False)
    now = dt.datetime.now(dt.timezone.utc)
    expired = intermediate_ca.issue_leaf(certificate.public_key(), "old",
                                         not_before=now - dt.timedelta(days=60),
                                         not_after=now - dt.timedelta(days=1))
    token.add_certificate(expired, "old", b"\x01")
    log = tmp_path / "spy.log"
    env = {k: v for k, v in os.environ.items() if k != "RAH_PKCS11_PIN"}
    env.update(token.env, RAH_PKCS11_MODULE=SPY, PKCS11SPY=token.module, PKCS11SPY_OUTPUT=str(log))
    uri = token.uri_for("old", type="cert", pin_source=f"file:{tmp_path / 'no-pin-here'}")
    done = subprocess.run(
        [sys.executable, "-m", "rolesanywhere_hsm", "doctor", "--json", "--certificate", uri,
         "--trust-anchor-ca", ca_file, "--trust-anchor-arn", emulator.trust_anchor_arn,
         "--profile-arn", emulator.profile_arn, "--role-arn", emulator.role_arn,
         "--endpoint", emulator.url],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, start_new_session=True,
        stdin=subprocess.DEVNULL)
    assert done.returncode == EXIT_CHECK_FAILED, done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["validity"]["status"] == FAIL and "expired" in checks["validity"]["message"]
    path = checks["chain-path"]
    assert path["status"] == FAIL and "no path to the trust anchor" in path["message"], checks
    assert checks["pin"]["status"] == FAIL and checks["key"]["status"] == "skip"
    assert counts(parse_spy_log(log))["C_Login"] == 0


@pytest.mark.softhsm
def test_a_token_key_of_another_certificate_is_reported_with_no_login(
        emulator: Emulator, softhsm_factory: Any, intermediate_ca: CertificateAuthority,
        ca_file: str, tmp_path: Path) -> None:
    """The certificate file is for one token key, --private-key names another: the public key
    object with that key's CKA_ID shows the mismatch, so doctor reports it in the key line
    while no PIN source answers, and pkcs11-spy shows no C_Login."""
    import os
    import subprocess
    import sys

    from tests.signers.spylog import SPY, counts, parse_spy_log

    if not os.path.isfile(SPY):
        pytest.skip("OpenSC's pkcs11-spy.so is not installed")
    token = softhsm_factory("rah-doctor-pair", [])
    mine, _ = token.add_key("p256", "mine", b"\x01", intermediate_ca)
    token.add_key("p256", "other", b"\x02", intermediate_ca)
    cert_file = write_pem(tmp_path / "mine.pem", mine)
    log = tmp_path / "spy.log"
    env = {k: v for k, v in os.environ.items() if k != "RAH_PKCS11_PIN"}
    env.update(token.env, RAH_PKCS11_MODULE=SPY, PKCS11SPY=token.module, PKCS11SPY_OUTPUT=str(log))
    key_uri = token.uri_for("other", b"\x02", pin_source=f"file:{tmp_path / 'no-pin-here'}")
    done = subprocess.run(
        [sys.executable, "-m", "rolesanywhere_hsm", "doctor", "--json", "--certificate", str(cert_file),
         "--private-key", key_uri, "--trust-anchor-ca", ca_file,
         "--trust-anchor-arn", emulator.trust_anchor_arn, "--profile-arn", emulator.profile_arn,
         "--role-arn", emulator.role_arn, "--endpoint", emulator.url],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, start_new_session=True,
        stdin=subprocess.DEVNULL)
    assert done.returncode == EXIT_CHECK_FAILED, done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    key = checks["key"]
    assert key["status"] == FAIL and key["code"] == "RAH-KEY-001", (key, checks["pin"])
    assert "does not belong to the certificate" in key["message"]
    assert checks["pin"]["status"] == FAIL
    assert counts(parse_spy_log(log))["C_Login"] == 0
