"""`rolesanywhere-hsm tokens`: every module, token and certificate, each with a URI that,
pasted as it is, selects that certificate (checked with read-certificate-data and, for those
with a key, credential-process against the emulator). On SoftHSM with several tokens, the
software TPM and the virtual YubiKey through ykcs11 and OpenSC; run through the console script's
`main` (tests.clirunner.run_cli)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, write_pem
from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
from rolesanywhere_hsm._dev.softhsm import SoftHsmToken
from tests.fixtures.softhsm import SOFTHSM_PIN
from tests.tokens.tpm import TpmToken
from tests.tokens.yubikey import VirtualYubiKey
from tests.clirunner import run_cli

ROOT = Path(__file__).parents[2]


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, cwd=ROOT)


def listed(env: dict[str, str], module: str, *extra: str) -> dict[str, Any]:
    """The `tokens --json` entry of `module`."""
    result = run(env, "tokens", "--json", "--pkcs11-lib", module, *extra)
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert entries[0]["module"] == module and entries[0]["foundBy"] == "--pkcs11-lib"
    return entries[0]


def certificates(entry: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(t, c) for t in entry["tokens"] for c in t["certificates"]]


def assert_selects(env: dict[str, str], cert: dict[str, Any]) -> None:
    """The printed URI, pasted into read-certificate-data with no module option, selects
    exactly this certificate (module-path is in the URI)."""
    clean = {k: v for k, v in env.items() if k != "RAH_PKCS11_MODULE"}
    result = run(clean, "read-certificate-data", "--certificate", cert["uri"])
    assert result.returncode == 0, result.stderr
    [found] = json.loads(result.stdout)
    assert found["serialNumber"] == cert["serialNumber"] and found["uri"] == cert["uri"]


def credential_process(server: Emulator, env: dict[str, str], uri: str,
                       *extra: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in env.items() if k != "RAH_PKCS11_MODULE"}
    return run(clean, "credential-process", "--certificate", uri, *extra,
               "--trust-anchor-arn", server.trust_anchor_arn, "--profile-arn", server.profile_arn,
               "--role-arn", server.role_arn, "--endpoint", server.url)


# -- SoftHSM, several tokens --------------------------------------------------------------------


@pytest.fixture
def three_tokens(softhsm_factory: Callable[..., SoftHsmToken],
                 intermediate_ca: CertificateAuthority) -> list[SoftHsmToken]:
    """Two tokens with one label ('twin') and a third; 'shared' on two of them; the issuing CA
    certificate beside the leaves on the third."""
    first = softhsm_factory("twin", [("p256", "shared", b"\x01"), ("rsa2048", "rsa", b"\x02")])
    second = softhsm_factory("twin", [("p256", "shared", b"\x01")])
    third = softhsm_factory("solo", [("p384", "only", b"\x07")])
    third.add_certificate(intermediate_ca.certificate, "issuing-ca", b"\xca")
    return [first, second, third]


@pytest.fixture
def softhsm_server(root_ca: CertificateAuthority) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig.for_certificates([root_ca.certificate])) as emulator:
        yield emulator


@pytest.mark.softhsm
def test_softhsm_every_printed_uri_selects_its_certificate(
    three_tokens: list[SoftHsmToken], softhsm_server: Emulator, intermediate_ca: CertificateAuthority,
    tmp_path: Path,
) -> None:
    token = three_tokens[0]
    env = dict(os.environ, **token.env, RAH_PKCS11_PIN=SOFTHSM_PIN)
    entry = listed(env, token.module)
    found = certificates(entry)
    assert sorted((t["label"], c["label"]) for t, c in found) == [
        ("solo", "issuing-ca"), ("solo", "only"), ("twin", "rsa"), ("twin", "shared"), ("twin", "shared")]
    uris = [c["uri"] for _, c in found]
    assert len(set(uris)) == len(uris) and all(f"module-path={token.module}" in u for u in uris)
    assert all("serial=" in c["uri"] for t, c in found if t["label"] == "twin" and c["label"] == "shared")
    assert all("serial=" not in c["uri"] for t, c in found if t["label"] == "solo")
    chain = write_pem(tmp_path / "chain.pem", intermediate_ca.certificate)
    for tok, cert in found:
        assert "login required" in tok["flags"]
        assert_selects(env, cert)
        if cert["label"] == "issuing-ca":
            assert cert["isCA"] and cert["privateKey"] == "not listed" and cert["publicKey"] == "none"
            continue
        assert cert["publicKey"] == "paired" and cert["privateKey"] == "not listed"
        result = credential_process(softhsm_server, env, cert["uri"], "--intermediates", str(chain))
        assert result.returncode == 0, result.stderr
        assert format(softhsm_server.last_issued.leaf_serial, "x") == cert["serialNumber"]


@pytest.mark.softhsm
def test_softhsm_login_lists_private_keys_and_pairs_them(three_tokens: list[SoftHsmToken]) -> None:
    token = three_tokens[2]
    env = dict(os.environ, **token.env, RAH_PKCS11_PIN=SOFTHSM_PIN)
    entry = listed(env, token.module, "--login", "--token", "solo")
    [tok] = entry["tokens"]
    assert tok["loggedIn"] and tok["label"] == "solo"
    assert {(k["class"], k["label"]) for k in tok["keys"]} == {("private", "only"), ("public", "only")}
    only = next(c for c in tok["certificates"] if c["label"] == "only")
    assert only["privateKey"] == "paired" and only["alwaysAuthenticate"] is False
    assert only["keyType"] == "EC" and only["keyBits"] == 384


@pytest.mark.softhsm
def test_softhsm_text_output_names_flags_and_uris(three_tokens: list[SoftHsmToken]) -> None:
    token = three_tokens[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TPM2_PKCS11_")}
    result = run(dict(env, **token.env), "tokens", "--pkcs11-lib", token.module)
    assert result.returncode == 0, result.stderr
    # tpm2-pkcs11 (registered with p11-kit) finds no TPM here: its noise is contained.
    assert "ERROR" not in result.stderr
    assert "flags: login required" in result.stdout and "[CA certificate]" in result.stdout
    assert f"uri pkcs11:token=solo;type=cert;id=%07?module-path={token.module}" in result.stdout
    assert "add --login" in result.stdout


@pytest.mark.softhsm
def test_read_certificate_data_matching_nothing_exits_4_and_names_the_tokens(
    three_tokens: list[SoftHsmToken],
) -> None:
    token = three_tokens[0]
    env = dict(os.environ, **token.env)
    result = run(env, "read-certificate-data", "--certificate",
                 f"pkcs11:token=nope;object=x?module-path={token.module}")
    assert result.returncode == 4 and result.stdout == ""
    assert "No certificate matches" in result.stderr and "'twin'" in result.stderr and "'solo'" in result.stderr
    assert "Traceback" not in result.stderr


# -- TPM -----------------------------------------------------------------------------------------


@pytest.mark.tpm
def test_tpm_printed_uris_get_credentials(tpm: TpmToken) -> None:
    env = tpm.subprocess_env(pin=True)
    entry = listed(env, tpm.module)
    found = certificates(entry)
    assert {c["label"] for _, c in found} == {k.label for k in tpm.keys.values()}
    with Emulator(EmulatorConfig.for_certificates([tpm.ca.certificate])) as server:
        for _, cert in found:
            assert_selects(env, cert)
            result = credential_process(server, env, cert["uri"])
            assert result.returncode == 0, result.stderr
            assert format(server.last_issued.leaf_serial, "x") == cert["serialNumber"]


# -- virtual YubiKey -----------------------------------------------------------------------------


@pytest.mark.yubikey
@pytest.mark.parametrize("which", ["ykcs11", "opensc"])
def test_yubikey_printed_uris_select_their_certificates(yubikey: VirtualYubiKey, which: str) -> None:
    module = yubikey.ykcs11_module if which == "ykcs11" else yubikey.opensc_module
    env = yubikey.subprocess_env(module, pin=True)
    entry = listed(env, module)
    found = certificates(entry)
    serials = {format(s.certificate.serial_number, "x"): name for name, s in yubikey.slots.items()}
    assert set(serials) <= {c["serialNumber"] for _, c in found}
    attestation = [c for _, c in found if c["attestation"]]
    if which == "ykcs11":  # ykcs11 shows the attestation certificates, OpenSC does not
        assert attestation and all(c["serialNumber"] not in serials for c in attestation)
    with Emulator(EmulatorConfig.for_certificates([yubikey.ca.certificate])) as server:
        for _, cert in found:
            assert_selects(env, cert)
            if cert["attestation"] or cert["serialNumber"] not in serials:
                continue
            result = credential_process(server, env, cert["uri"])
            assert result.returncode == 0, (cert["uri"], result.stderr)
            assert format(server.last_issued.leaf_serial, "x") == cert["serialNumber"]
    if which == "opensc":
        nine_e = next(c for _, c in found if serials.get(c["serialNumber"]) == "9e")
        assert nine_e["privateKey"] == "paired" and nine_e["keyNeedsLogin"] is False


@pytest.mark.softhsm
def test_softhsm_login_with_a_wrong_pin_is_reported_once_and_the_listing_goes_on(
    three_tokens: list[SoftHsmToken],
) -> None:
    token = three_tokens[2]
    env = dict(os.environ, **token.env, RAH_PKCS11_PIN="not-the-pin")
    entry = listed(env, token.module, "--login", "--token", "solo")
    [tok] = entry["tokens"]
    assert not tok["loggedIn"] and "refused the PIN" in tok["error"] and "not-the-pin" not in tok["error"]
    assert [k["class"] for k in tok["keys"]] == ["public"]  # private keys stay hidden
    assert {c["label"] for c in tok["certificates"]} == {"only", "issuing-ca"}


@pytest.mark.softhsm
def test_softhsm_pin_from_the_environment_goes_to_one_token_only(three_tokens: list[SoftHsmToken]) -> None:
    token = three_tokens[0]
    env = dict(os.environ, **token.env, RAH_PKCS11_PIN=SOFTHSM_PIN)
    entry = listed(env, token.module, "--login")
    logged = [t for t in entry["tokens"] if t["loggedIn"]]
    refused = [t for t in entry["tokens"] if t["error"]]
    assert len(logged) == 1 and len(refused) == 2
    assert all("--token" in t["error"] for t in refused)


@pytest.mark.softhsm
def test_tokens_token_shows_only_that_token_and_marks_an_expired_certificate(
        softhsm_factory: Callable[..., SoftHsmToken], root_ca: CertificateAuthority, tmp_path: Path) -> None:
    import datetime as dt

    from rolesanywhere_hsm._dev.devpki import new_private_key

    token = softhsm_factory("dated", [("p256", "current", b"\x01")])
    now = dt.datetime.now(dt.timezone.utc)
    old = root_ca.issue_leaf(new_private_key("p256").public_key(), "old",
                             not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))
    token.add_certificate(old, "old", b"\x0e")
    # a module the user did not name that fails to load: not part of `--token dated`
    modules = tmp_path / "home" / ".config" / "pkcs11" / "modules"
    modules.mkdir(parents=True)
    (modules / "broken.module").write_text(f"module: {tmp_path / 'not-a-module.so'}\n")
    (tmp_path / "not-a-module.so").write_bytes(b"not an ELF file")
    env = dict({k: v for k, v in os.environ.items() if not k.startswith(("RAH_", "TPM2_PKCS11_"))},
               **token.env, HOME=str(tmp_path / "home"))
    everything = run(env, "tokens", "--pkcs11-lib", token.module)
    assert everything.returncode == 0 and "not-a-module.so" in everything.stdout  # the probe sees it
    result = run(env, "tokens", "--pkcs11-lib", token.module, "--token", "dated")
    assert result.returncode == 0, result.stderr
    assert "not-a-module.so" not in result.stdout and "cannot list it" not in result.stdout, result.stdout
    assert "ERROR" not in result.stderr
    old_lines = result.stdout.split("certificate 'old'")[1].splitlines()[0]
    assert "[EXPIRED]" in old_lines
    current = result.stdout.split("certificate 'current'")[1].splitlines()[0]
    assert "EXPIRED" not in current
    entries = json.loads(run(env, "tokens", "--json", "--pkcs11-lib", token.module, "--token", "dated").stdout)
    states = {c["label"]: c["validity"] for m in entries for t in m["tokens"] for c in t["certificates"]}
    assert states == {"old": "expired", "current": "valid"}
    absent = run(env, "tokens", "--pkcs11-lib", token.module, "--token", "nothere")
    assert absent.returncode == 0 and "no token labelled 'nothere'" in absent.stdout
