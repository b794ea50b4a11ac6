"""--cert-selector on tokens (issue 12 item 3): the official helper's selector applied to the
certificates of every SoftHSM token of the module, before any login; by serial, by subject and
issuer, from a JSON file; several matches are an error listing their URIs, or the
latest-expiring with --use-latest-expiring-certificate; the key is the one with the chosen
certificate's CKA_ID. The credential-process test checks the leaf the emulator received."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from rolesanywhere_hsm.certselector import parse_cert_selector
from rolesanywhere_hsm._dev.devpki import CertificateAuthority
from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
from rolesanywhere_hsm.errors import CertificateError
from rolesanywhere_hsm.signers.base import SignerConfig
from rolesanywhere_hsm.signers.pkcs11 import open_pkcs11_signer, selected_certificate
from rolesanywhere_hsm._dev.softhsm import SoftHsmToken
from tests.fixtures.softhsm import SOFTHSM_PIN
from tests.secretasker import SecretAsker
from tests.signatures import verify_signature
from tests.signers.spylog import SPY, counts, parse_spy_log
from tests.clirunner import run_cli, run_process

pytestmark = pytest.mark.softhsm

ROOT = Path(__file__).parents[2]
MESSAGE = b"AWS4-X509-ECDSA-SHA256\n20260101T000000Z\n20260101/us-east-1/rolesanywhere/aws4_request\nabc"


def never_asked(description: str) -> str:
    raise AssertionError(f"a PIN was asked for: {description}")


def reissue(token: SoftHsmToken, ca: CertificateAuthority, label: str, key_id: bytes,
            common_name: str, days: int) -> bytes:
    """A key on `token` whose stored certificate has subject CN=`common_name` and expires in
    `days` days (the fixture's certificates all expire alike)."""
    token.add_key("p256", label, key_id, ca, store_certificate=False)
    cert = ca.issue_leaf(token.keys[label].certificate.public_key(), common_name=common_name,
                         not_after=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days))
    token.add_certificate(cert, label, key_id)
    return cert.public_bytes(Encoding.DER)


@pytest.fixture
def tokens(softhsm_factory: Callable[..., SoftHsmToken], intermediate_ca: CertificateAuthority,
           ) -> dict[str, bytes]:
    """Two tokens under one SOFTHSM2_CONF: 'alpha' holds 'left' (CN=left) and 'shared-soon'
    (CN=shared, expires in 30 days), 'beta' holds 'right' (CN=right) and 'shared-late'
    (CN=shared, expires in 300 days). Returns label -> certificate DER."""
    alpha = softhsm_factory("alpha", [("p256", "left", b"\x01")])
    soon = reissue(alpha, intermediate_ca, "shared-soon", b"\x02", "shared", 30)
    beta = softhsm_factory("beta", [("p256", "right", b"\x01")])
    late = reissue(beta, intermediate_ca, "shared-late", b"\x02", "shared", 300)
    return {"left": alpha.keys["left"].certificate_der, "right": beta.keys["right"].certificate_der,
            "shared-soon": soon, "shared-late": late}


def serial_of(der: bytes) -> str:
    from cryptography import x509

    return format(x509.load_der_x509_certificate(der).serial_number, "X")


def open_with(selector: str, *, latest: bool = False, certificate: str | None = None,
              callback: Callable[[str], str] = never_asked):  # noqa: ANN202
    return open_pkcs11_signer(SignerConfig(
        certificate=certificate, cert_selector=parse_cert_selector(selector),
        use_latest_expiring_certificate=latest, secret_callback=callback))


def test_by_serial_across_tokens(tokens: dict[str, bytes]) -> None:
    for label in ("left", "right", "shared-late"):
        asker = SecretAsker(SOFTHSM_PIN)
        with open_with(f"Key=x509Serial,Value={serial_of(tokens[label])}", callback=asker) as signer:
            assert signer.certificate == tokens[label]
            verify_signature(signer.certificate, MESSAGE, signer.sign(MESSAGE))  # the key of that CKA_ID
        assert len(asker.asked) == 1


def test_by_subject_and_issuer(tokens: dict[str, bytes], intermediate_ca: CertificateAuthority) -> None:
    issuer = intermediate_ca.certificate.subject.rfc4514_string()
    with open_with(f"Key=x509Subject,Value=CN=right Key=x509Issuer,Value={issuer}",
                   callback=SecretAsker(SOFTHSM_PIN)) as signer:
        assert signer.certificate == tokens["right"]
        assert signer.token_label == "beta"


def test_from_a_json_file(tokens: dict[str, bytes], tmp_path: Path) -> None:
    path = tmp_path / "selector.json"
    path.write_text(json.dumps([{"Key": "x509Serial", "Value": serial_of(tokens["left"]).lower()}]))
    assert selected_certificate(SignerConfig(
        certificate=None, cert_selector=parse_cert_selector(f"file://{path}"))) == tokens["left"]


def test_several_matches_are_listed_with_their_uris(tokens: dict[str, bytes]) -> None:
    with pytest.raises(CertificateError, match="matches 2 certificates") as info:
        open_with("Key=x509Subject,Value=CN=shared")
    text = info.value.diagnostics()
    assert "token=alpha" in text and "token=beta" in text and "--use-latest-expiring-certificate" in text


def test_the_latest_expiring_with_the_flag(tokens: dict[str, bytes]) -> None:
    with open_with("Key=x509Subject,Value=CN=shared", latest=True,
                   callback=SecretAsker(SOFTHSM_PIN)) as signer:
        assert signer.certificate == tokens["shared-late"]


def test_a_certificate_uri_narrows_the_search(tokens: dict[str, bytes]) -> None:
    with open_with("Key=x509Subject,Value=CN=shared",
                   certificate="pkcs11:token=alpha", callback=SecretAsker(SOFTHSM_PIN)) as signer:
        assert signer.certificate == tokens["shared-soon"]


def test_no_match_lists_every_candidate(tokens: dict[str, bytes]) -> None:
    with pytest.raises(CertificateError, match="matches no certificate") as info:
        open_with("Key=x509Serial,Value=1")
    assert info.value.diagnostics().count("pkcs11:") == 4


def _emulator_env(token_env: dict[str, str], **extra: str) -> dict[str, str]:
    return dict(os.environ, **token_env, **extra)


def test_credential_process_gets_credentials_with_the_selected_leaf(
    tokens: dict[str, bytes], softhsm_module: str, intermediate_ca: CertificateAuthority,
) -> None:
    env = dict(os.environ, SOFTHSM2_CONF=os.environ["SOFTHSM2_CONF"], RAH_PKCS11_MODULE=softhsm_module,
               RAH_PKCS11_PIN=SOFTHSM_PIN)
    with Emulator(EmulatorConfig.for_certificates([intermediate_ca.certificate])) as server:
        command = ["credential-process",
                   "--cert-selector", f"Key=x509Serial,Value={serial_of(tokens['right'])}",
                   "--trust-anchor-arn", server.trust_anchor_arn, "--profile-arn", server.profile_arn,
                   "--role-arn", server.role_arn, "--endpoint", server.url]
        done = run_cli(*command, env=env, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["AccessKeyId"]
        assert base64.b64decode(server.requests[-1].header("x-amz-x509")) == tokens["right"]

        command[command.index("--cert-selector") + 1] = "Key=x509Subject,Value=CN=shared"
        done = run_cli(*command, "--use-latest-expiring-certificate", env=env, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        assert base64.b64decode(server.requests[-1].header("x-amz-x509")) == tokens["shared-late"]


def test_doctor_with_a_selector_alone_and_no_module_named_takes_the_search_locate_takes(
    tokens: dict[str, bytes], intermediate_ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """doctor --cert-selector without --certificate or a module ended in an internal error
    (TypeError: the certificate was None); and with --certificate absent and no module named,
    its module line must be the module the selector's search over every module picks, as for
    credential-process, not the first module found."""
    monkeypatch.delenv("RAH_PKCS11_MODULE")
    env = dict(os.environ, RAH_PKCS11_PIN=SOFTHSM_PIN)
    env.pop("RAH_PKCS11_MODULE", None)
    with Emulator(EmulatorConfig.for_certificates([intermediate_ca.certificate])) as server:
        def doctor(selector: str) -> dict[str, dict[str, str]]:
            done = run_cli("doctor", "--json", "--cert-selector", selector,
                           "--trust-anchor-arn", server.trust_anchor_arn, "--profile-arn", server.profile_arn,
                           "--role-arn", server.role_arn, "--endpoint", server.url, env=env, cwd=ROOT)
            assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
            return {c["name"]: c for c in json.loads(done.stdout)["checks"]}

        checks = doctor(f"Key=x509Serial,Value={serial_of(tokens['right'])}")
        assert checks["module"]["status"] == "pass" and "softhsm" in checks["module"]["message"].lower()
        assert "chosen by --cert-selector" in checks["module"]["message"]
        assert checks["certificate"]["status"] == "pass" and "('beta'," in checks["certificate"]["message"]
        for name in ("token", "pin", "key", "signature"):
            assert checks[name]["status"] == "pass", checks[name]
        # two certificates match: the certificate line says so with its code, nothing is opened
        checks = doctor("Key=x509Subject,Value=CN=shared")
        assert checks["module"]["status"] == "skip" and checks["key"]["status"] == "skip"
        assert checks["certificate"]["status"] == "fail" and checks["certificate"]["code"] == "RAH-CERT-001"
        assert "matches 2 certificates" in checks["certificate"]["message"]


def test_credential_process_with_cache_and_a_selector_alone_caches_the_selected_leaf(
    tokens: dict[str, bytes], softhsm_module: str, intermediate_ca: CertificateAuthority, tmp_path: Path,
) -> None:
    """Issue 16 item 6: `--cache --cert-selector` without --certificate exited 1 (the cache
    entry's description redacted a None certificate)."""
    env = dict(os.environ, SOFTHSM2_CONF=os.environ["SOFTHSM2_CONF"], RAH_PKCS11_MODULE=softhsm_module,
               RAH_PKCS11_PIN=SOFTHSM_PIN, RAH_CACHE_DIR=str(tmp_path / "cache"))
    with Emulator(EmulatorConfig.for_certificates([intermediate_ca.certificate])) as server:
        command = [sys.executable, "-m", "rolesanywhere_hsm", "credential-process", "--cache",
                   "--cert-selector", f"Key=x509Serial,Value={serial_of(tokens['right'])}",
                   "--trust-anchor-arn", server.trust_anchor_arn, "--profile-arn", server.profile_arn,
                   "--role-arn", server.role_arn, "--endpoint", server.url]
        runs = [subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=90,
                               stdin=subprocess.DEVNULL, start_new_session=True) for _ in range(2)]
        assert [run.returncode for run in runs] == [0, 0], runs[0].stderr
        assert runs[0].stdout == runs[1].stdout
        assert len(server.issued) == 1  # the second run was a hit
        assert base64.b64decode(server.requests[-1].header("x-amz-x509")) == tokens["right"]
    listed = subprocess.run([sys.executable, "-m", "rolesanywhere_hsm", "cache", "list", "--json"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=True)
    [row] = json.loads(listed.stdout)["entries"]
    assert "x509Serial" in row["description"] and row["state"] == "valid"


def test_no_pin_is_spent_before_the_selection_succeeds(
    tokens: dict[str, bytes], softhsm_module: str, tmp_path: Path,
) -> None:
    if not os.path.isfile(SPY):
        pytest.skip("OpenSC's pkcs11-spy.so is not installed")
    log = tmp_path / "spy.log"
    env = dict(os.environ, SOFTHSM2_CONF=os.environ["SOFTHSM2_CONF"], RAH_PKCS11_MODULE=SPY,
               PKCS11SPY=softhsm_module, PKCS11SPY_OUTPUT=str(log), RAH_PKCS11_PIN="a-wrong-pin")
    # Real processes: the spy counts one process's calls and opens its log once per process.
    command = ["credential-process",
               "--cert-selector", "Key=x509Subject,Value=CN=shared",
               "--trust-anchor-arn", "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/0b6b9c7e-6f5c-4c3e-9a3e-2b1d0f5a1c11",
               "--profile-arn", "arn:aws:rolesanywhere:us-east-1:123456789012:profile/4c1a2b3c-0d1e-4f5a-8b6c-7d8e9f0a1b2c",
               "--role-arn", "arn:aws:iam::123456789012:role/r", "--endpoint", "http://127.0.0.1:9"]
    done = run_process(*command, env=env)
    assert done.returncode == 3, done.stderr
    assert "matches 2 certificates" in done.stderr
    assert counts(parse_spy_log(log))["C_Login"] == 0

    # The same run with a selector that matches one: the (wrong) PIN is presented once, and
    # the spy sees it: the count above could have been non-zero.
    log.unlink()
    command[command.index("--cert-selector") + 1] = f"Key=x509Serial,Value={serial_of(tokens['left'])}"
    done = run_process(*command, env=env)
    assert done.returncode == 5, done.stderr
    assert counts(parse_spy_log(log))["C_Login"] == 1


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, cwd=ROOT)


def test_read_certificate_data_and_sign_string_with_a_selector_alone(
    tokens: dict[str, bytes], softhsm_module: str,
) -> None:
    from rolesanywhere_hsm.x509 import certificate_data

    env = dict(os.environ, SOFTHSM2_CONF=os.environ["SOFTHSM2_CONF"], RAH_PKCS11_MODULE=softhsm_module)
    env.pop("RAH_PKCS11_PIN", None)
    selector = f"Key=x509Serial,Value={serial_of(tokens['right'])}"
    done = _cli(env, "read-certificate-data", "--cert-selector", selector)  # no PIN anywhere
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == certificate_data(tokens["right"])
    done = _cli(env, "read-certificate-data", "--certificate", "pkcs11:token=alpha",
                "--cert-selector", "Key=x509Subject,Value=CN=shared")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == certificate_data(tokens["shared-soon"])

    done = _cli(dict(env, RAH_PKCS11_PIN=SOFTHSM_PIN), "sign-string", "--cert-selector", selector,
                "--format", "text")
    assert done.returncode == 0, done.stderr
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from rolesanywhere_hsm.cli.certificate import sign_string_message
    from rolesanywhere_hsm.x509 import certificate_info

    cert = x509.load_der_x509_certificate(tokens["right"])
    message = sign_string_message(certificate_info(tokens["right"]).public_key_info)
    cert.public_key().verify(bytes.fromhex(done.stdout), message, ec.ECDSA(hashes.SHA256()))


def test_with_no_module_named_every_module_tokens_finds_is_searched(
    tokens: dict[str, bytes], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No --pkcs11-lib, RAH_PKCS11_MODULE or module-path: the modules `tokens` lists (SoftHSM
    among them, maybe also through p11-kit-proxy: the same token counts once)."""
    from rolesanywhere_hsm.signers.pkcs11.modules import known_module_paths

    monkeypatch.delenv("RAH_PKCS11_MODULE")
    assert known_module_paths()  # the machine has modules to search
    selector = parse_cert_selector(f"Key=x509Serial,Value={serial_of(tokens['right'])}")
    assert selected_certificate(SignerConfig(certificate=None, cert_selector=selector)) == tokens["right"]
    with open_pkcs11_signer(SignerConfig(certificate=None, cert_selector=selector,
                                         secret_callback=SecretAsker(SOFTHSM_PIN))) as signer:
        assert signer.certificate == tokens["right"]
    with pytest.raises(CertificateError, match="matches 2 certificates in the tokens of every PKCS#11 module"):
        open_with("Key=x509Subject,Value=CN=shared")


def test_with_no_module_named_the_chosen_module_is_loaded_once(
    tokens: dict[str, bytes], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The search over every module hands the module it chose, still loaded, to the opening:
    the chosen module is loaded and initialised once (it was twice: once to search, once to
    open), by a signer and by read-certificate-data's search alike."""
    from rolesanywhere_hsm.signers.pkcs11 import modules

    monkeypatch.delenv("RAH_PKCS11_MODULE")
    selector = parse_cert_selector(f"Key=x509Serial,Value={serial_of(tokens['right'])}")
    counts_before = {path: modules.initialisation_count(path) for path, _ in modules.known_module_paths()}
    with open_pkcs11_signer(SignerConfig(certificate=None, cert_selector=selector,
                                         secret_callback=SecretAsker(SOFTHSM_PIN))) as signer:
        assert signer.certificate == tokens["right"]
        chosen = signer._module_path  # type: ignore[attr-defined]
    assert modules.initialisation_count(chosen) - counts_before[chosen] == 1
    before = modules.initialisation_count(chosen)
    assert selected_certificate(SignerConfig(certificate=None, cert_selector=selector)) == tokens["right"]
    assert modules.initialisation_count(chosen) - before == 1
    assert not modules.module_in_use(chosen)  # every use released
