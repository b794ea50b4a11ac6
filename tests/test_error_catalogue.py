"""docs/errors.md, line by line: each stable error code is used in the package and catalogued,
and each catalogued error is met the way a user meets it.

For a line marked "CLI" the test runs the command line in-process (tests.clirunner.run_cli, the
console script's own `main`, with
emulator, a SoftHSM token or a fault server on loopback where the error needs one) and checks the
message, the exit code, an empty stdout, no traceback, and `[CODE]` with --debug. For a line
marked "rendered" (the situation needs real AWS, a locked hardware token, a race, or half a
minute) it builds the error object and runs it through the CLI's own error handler.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rolesanywhere_hsm import errors
from rolesanywhere_hsm.cli import _guarded
from rolesanywhere_hsm._dev.devpki import CertificateAuthority, new_private_key, write_pem
from rolesanywhere_hsm.settings import CommandLineError, ConfigError
from tests.clirunner import run_cli, run_process
from tests.fixtures.faults import FaultServer, refused_url

ROOT = Path(__file__).parents[1]
CATALOGUE = ROOT / "docs" / "errors.md"
CODE = re.compile(r"RAH-[A-Z]+-\d{3}")
ROW = re.compile(r"^\| (RAH-[A-Z]+-\d{3}) \|.*\| (CLI|rendered)\b[^|]*\|$")


def catalogue() -> dict[str, str]:
    """code -> "CLI" or "rendered", from the tables of docs/errors.md."""
    rows: dict[str, str] = {}
    for line in CATALOGUE.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            assert match.group(1) not in rows, f"{match.group(1)} is catalogued twice"
            rows[match.group(1)] = match.group(2)
    return rows


def codes_in_package() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "rolesanywhere_hsm").rglob("*.py"):
        found |= set(CODE.findall(path.read_text(encoding="utf-8")))
    return found


def test_every_code_is_catalogued_and_every_catalogued_code_is_used() -> None:
    documented = set(catalogue())
    used = codes_in_package()
    assert used - documented == set(), "codes used in the package but missing from docs/errors.md"
    assert documented - used == set(), "codes in docs/errors.md that the package never uses"
    # and nothing in the prose names a code that has no table row
    assert set(CODE.findall(CATALOGUE.read_text(encoding="utf-8"))) == documented


def _error_classes() -> list[type[errors.RolesAnywhereError]]:
    seen: list[type[errors.RolesAnywhereError]] = []
    todo: list[type[errors.RolesAnywhereError]] = [errors.RolesAnywhereError]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo.extend(cls.__subclasses__())
    return [c for c in seen if c.__module__.startswith("rolesanywhere_hsm")]


def test_each_error_class_has_a_code_of_its_own() -> None:
    classes = _error_classes()
    assert ConfigError in classes and CommandLineError in classes
    by_code: dict[str, str] = {}
    for cls in classes:
        code = cls.__dict__.get("code")
        assert code, f"{cls.__name__} inherits its code: give it one of its own"
        assert CODE.fullmatch(code)
        assert code not in by_code, f"{cls.__name__} and {by_code[code]} share {code}"
        by_code[code] = cls.__name__


def test_a_raise_site_may_override_the_code() -> None:
    error = errors.UsageError("Cannot write x.", code="RAH-FILE-001")
    assert error.code == "RAH-FILE-001" and errors.UsageError("y").code == "RAH-USE-001"
    assert error.exit_code == 2


# ---------------------------------------------------------------------------------------------
# CLI: each line met as a user meets it


@dataclass
class Run:
    """One way to meet a catalogued error from the command line."""

    args: list[str]
    expect: str  # the stable part of the message
    exit_code: int
    env: dict[str, str] = field(default_factory=dict)
    drop_env: tuple[str, ...] = ()
    # A real process: the TSS libraries read TSS2_LOG once per process, and the test process
    # loaded them (the TPM key fixture) before the command could silence their logging.
    process: bool = False


class Context:
    """What the case builders may ask for: fixtures on demand (only the ones a case needs are
    started) and a temporary directory."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.request = request
        self.tmp = tmp_path

    def fixture(self, name: str) -> Any:
        return self.request.getfixturevalue(name)

    def arns(self, server: Any = None) -> list[str]:
        server = server or self.fixture("emulator")
        return ["--trust-anchor-arn", server.trust_anchor_arn, "--profile-arn", server.profile_arn,
                "--role-arn", server.role_arn]

    def leaf(self) -> list[str]:
        leaf = self.fixture("leaf_files")["p256"]
        return ["--certificate", str(leaf.certificate), "--private-key", str(leaf.key)]

    def file_call(self, server: Any = None, *extra: str) -> list[str]:
        server = server or self.fixture("emulator")
        return ["credential-process", *self.leaf(), *self.arns(server), "--endpoint", server.url, *extra]

    def junk(self) -> str:
        path = self.tmp / "junk.pem"
        path.write_text("not a certificate\n")
        return str(path)

    def softhsm(self) -> tuple[Any, dict[str, str]]:
        token = self.fixture("softhsm_token")
        return token, dict(self.fixture("softhsm_env"))

    def token_call(self, uri: str) -> list[str]:
        server = self.fixture("emulator_factory")(ca_certificates=[self.fixture("intermediate_ca").certificate])
        return ["credential-process", "--certificate", uri, *self.arns(server), "--endpoint", server.url]


def _use_001(c: Context) -> list[Run]:
    return [Run(["credential-process", *c.leaf(), *c.arns(), "--session-duration", "100"],
                "--session-duration 100 is out of range.", 2),
            Run(["serve", *c.leaf(), *c.arns(), "--address", "10.1.2.3"], "is not a loopback address", 2)]


def _use_002(c: Context) -> list[Run]:
    return [Run(["credential-process", "--bogus"], "No such option: --bogus.", 2),  # the fast parser
            Run(["version", "--bogus"], "No such option: --bogus", 2),  # click, through typer
            Run(["credential-process", "--no-proxy=yes"], "--no-proxy takes no value.", 2)]


def _cfg_001(c: Context) -> list[Run]:
    missing = c.tmp / "absent.toml"
    present = c.tmp / "config.toml"
    present.write_text('[profiles.work]\nregion = "us-east-1"\n')
    return [Run(["credential-process", "--config", str(missing), "--config-profile", "x"], "does not exist", 2),
            Run(["credential-process", "--config", str(present), "--config-profile", "home"], "has no profile 'home'", 2),
            Run(["read-certificate-data"], "read-certificate-data needs --certificate (or --cert-selector).", 2)]


def _file_001(c: Context) -> list[Run]:
    blocker = c.tmp / "a-file"
    blocker.write_text("")
    target = blocker / "aws" / "credentials"  # its parent cannot be made: a file is in the way
    server = c.fixture("emulator")
    args = ["update", "--once", *c.leaf(), *c.arns(server), "--endpoint", server.url]
    fifo = c.tmp / "fifo"
    os.mkfifo(fifo)
    return [Run(args, "Cannot create the directory", 2, env={"AWS_SHARED_CREDENTIALS_FILE": str(target)}),
            Run(args, "it is a FIFO (named pipe), not a regular file", 2,
                env={"AWS_SHARED_CREDENTIALS_FILE": str(fifo)})]


def _file_003(c: Context) -> list[Run]:
    if os.geteuid() != 0:
        pytest.skip("planting a link as another user needs root")
    shared = c.tmp / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    planted = shared / "credentials"
    planted.symlink_to(c.tmp / "victim")
    os.lchown(planted, 65534, 65534)
    server = c.fixture("emulator")
    args = ["update", "--once", *c.leaf(), *c.arns(server), "--endpoint", server.url]
    return [Run(args, "is a symbolic link owned by another user (uid 65534)", 2,
                env={"AWS_SHARED_CREDENTIALS_FILE": str(planted)})]


def _arn_001(c: Context) -> list[Run]:
    server = c.fixture("emulator")
    bad = c.arns(server)
    bad[1] = "not-an-arn"
    return [Run(["credential-process", *c.leaf(), *bad], "The trust anchor ARN 'not-an-arn' is not an ARN.", 2)]


def _ep_001(c: Context) -> list[Run]:
    return [Run(["credential-process", *c.leaf(), *c.arns(), "--endpoint", "ftp://example.com"],
                "is not an http(s) URL", 2)]


def _uri_001(c: Context) -> list[Run]:
    return [Run(["credential-process", "--certificate", "pkcs11:tokn=x", *c.arns()],
                "unknown path attribute", 2)]


def _cert_001(c: Context) -> list[Run]:
    return [Run(["read-certificate-data", "--certificate", c.junk()], "is not a certificate (neither PEM nor DER)", 3),
            Run(["read-certificate-data", "--certificate", str(c.tmp / "absent.pem")], "Cannot read the certificate file", 3)]


def _key_001(c: Context) -> list[Run]:
    server = c.fixture("emulator")
    leaf = c.fixture("leaf_files")
    other = leaf["rsa2048"].key if "rsa2048" in leaf else leaf["p384"].key
    return [Run(["credential-process", "--certificate", str(leaf["p256"].certificate), "--private-key", c.junk(),
                 *c.arns(server), "--endpoint", server.url], "is not a private key this tool can read", 3),
            Run(["credential-process", "--certificate", str(leaf["p256"].certificate), "--private-key", str(other),
                 *c.arns(server), "--endpoint", server.url], "does not belong to the certificate", 3)]


def _tok_001(c: Context) -> list[Run]:
    tpm = c.fixture("tpm_key_files")
    key = next(k for k in tpm.keys.values() if k.password is None)
    server = c.fixture("emulator_factory")(ca_certificates=[tpm.ca.certificate])
    dead = refused_url().rsplit(":", 1)[1]
    return [Run(["credential-process", "--certificate", str(key.certificate_path), "--private-key", str(key.path),
                 *c.arns(server), "--endpoint", server.url, "--no-tpm-key-password"],
                "Cannot open the TPM through", 4, env={"RAH_TPM_TCTI": f"swtpm:host=127.0.0.1,port={dead}"},
                process=True)]


def _mod_001(c: Context) -> list[Run]:
    return [Run(["credential-process", "--certificate", "pkcs11:token=x;object=y;type=cert", *c.arns()],
                "does not exist", 4, env={"RAH_PKCS11_MODULE": str(c.tmp / "no-such-module.so")})]


def _sel_001(c: Context) -> list[Run]:
    _, env = c.softhsm()
    return [Run(c.token_call("pkcs11:token=rah-test;object=nothing-here;type=cert"), "No certificate matches", 4, env=env),
            Run(c.token_call("pkcs11:token=rah-test;object=dup;type=cert"), "2 certificates match", 4, env=env)]


def _pin_002(c: Context) -> list[Run]:
    token, env = c.softhsm()
    return [Run(c.token_call(token.uri_for("ec-p256", type="cert")), "no terminal to ask on", 5, env=env,
                drop_env=("RAH_PKCS11_PIN",)),
            Run(c.token_call(token.uri_for("ec-p256", type="cert") + "?pin-source=env:RAH_NOT_SET_ANYWHERE"),
                "which is not set", 5, env=env, drop_env=("RAH_PKCS11_PIN", "RAH_NOT_SET_ANYWHERE"))]


def _pin_003(c: Context) -> list[Run]:
    token, env = c.softhsm()
    env["RAH_PKCS11_PIN"] = "wrong-pin-0000"
    return [Run(c.token_call(token.uri_for("ec-p256", type="cert")), "It was tried once and is not retried", 5, env=env)]


def _svc(c: Context, status: Any) -> list[str]:
    server = c.fixture("emulator")
    if status is not None:
        # Every attempt of both runs (plain, then --debug; up to 5 each for a 429) sees the same
        # answer: a run that stops early on its time budget leaves more for the next one.
        server.inject_failures([status] * 16)
    return c.file_call(server)


def _svc_001(c: Context) -> list[Run]:
    return [Run(_svc(c, 400), "Roles Anywhere refused the request: ServiceException", 6)]


def _svc_002(c: Context) -> list[Run]:
    stranger = CertificateAuthority.create("Not The Trust Anchor CA", "p256")
    key = new_private_key("p256")
    cert = write_pem(c.tmp / "stranger.crt", stranger.issue_leaf(key.public_key(), "stranger"))
    key_file = write_pem(c.tmp / "stranger.key", key, mode=0o600)
    server = c.fixture("emulator")
    return [Run(["credential-process", "--certificate", str(cert), "--private-key", str(key_file),
                 *c.arns(server), "--endpoint", server.url], "AccessDeniedException", 6)]


def _svc_003(c: Context) -> list[Run]:
    from rolesanywhere_hsm.emulator.service import Fault

    fault = Fault(400, "ValidationException", "1 validation error detected: Value '99999' at "
                  "'durationSeconds' failed to satisfy constraint: Member must have value less than "
                  "or equal to 43200")
    return [Run(_svc(c, fault), "ValidationException: 1 validation error detected", 6)]


def _svc_004(c: Context) -> list[Run]:
    args = _svc(c, None)
    at = args.index("--profile-arn") + 1
    args[at] = args[at].rsplit("/", 1)[0] + "/00000000-0000-4000-8000-000000000000"
    return [Run(args, "ResourceNotFoundException", 6)]


def _svc_005(c: Context) -> list[Run]:
    # Throttled answers are backed off in seconds: a short budget keeps the run to ~3 s.
    return [Run([*_svc(c, 429), "--timeout", "3"], "ThrottlingException", 9)]


def _net_001(c: Context) -> list[Run]:
    return [Run(["credential-process", *c.leaf(), *c.arns(), "--endpoint", refused_url()], "Cannot connect to", 7)]


def _net_003(c: Context) -> list[Run]:
    server = FaultServer("silent", lifetime=20)
    server.__enter__()
    c.request.addfinalizer(server.stop)
    return [Run(["credential-process", *c.leaf(), *c.arns(), "--endpoint", server.url, "--timeout", "1"],
                "time budget ran out", 7)]


def _att_002(c: Context) -> list[Run]:
    leaf = c.fixture("leaf_files")["p256"]
    return [Run(["attest", "--private-key", str(leaf.key)], "A private key file in software cannot be attested", 10)]


def _attestation_files(c: Context) -> dict[str, str]:
    """A YubiKey-shaped attestation made by devpki: root -> f9 -> slot certificate for a key,
    with a certificate for that key and one for another key."""
    root = CertificateAuthority.create("Test PIV Attestation Root")
    f9 = root.issue_intermediate("Yubico PIV Attestation")
    key, other = new_private_key("p256"), new_private_key("p256")
    slot = f9.issue_leaf(key.public_key(), "YubiKey PIV Attestation 9a", key_usage=None, basic_constraints_ca=None)
    some_ca = CertificateAuthority.create("Issuing CA")
    return {
        "bundle": str(write_pem(c.tmp / "att.pem", slot, f9.certificate)),
        "root": str(write_pem(c.tmp / "root.pem", root.certificate)),
        "other_root": str(write_pem(c.tmp / "other-root.pem", some_ca.certificate)),
        "cert": str(write_pem(c.tmp / "cert.pem", some_ca.issue_leaf(key.public_key(), "w"))),
        "other_cert": str(write_pem(c.tmp / "other.pem", some_ca.issue_leaf(other.public_key(), "w"))),
    }


def _verify_call(files: dict[str, str], cert: str, roots: str, *extra: str) -> list[str]:
    return ["verify-attestation", "--attestation", files["bundle"], "--certificate", files[cert],
            "--roots", files[roots], *extra]


def _att_003(c: Context) -> list[Run]:
    return [Run(_verify_call(_attestation_files(c), "cert", "other_root"), "does not chain to the given roots", 10)]


def _att_004(c: Context) -> list[Run]:
    return [Run(_verify_call(_attestation_files(c), "other_cert", "root"), "The attestation is for another key", 10)]


def _att_005(c: Context) -> list[Run]:
    return [Run(_verify_call(_attestation_files(c), "cert", "root", "--require-pin-policy", "once"),
                "The key's PIN policy is not attested; the CA requires once.", 10)]


CLI_CASES: dict[str, Callable[[Context], list[Run]]] = {
    "RAH-USE-001": _use_001, "RAH-USE-002": _use_002, "RAH-CFG-001": _cfg_001, "RAH-FILE-001": _file_001,
    "RAH-FILE-003": _file_003,
    "RAH-ARN-001": _arn_001, "RAH-EP-001": _ep_001, "RAH-URI-001": _uri_001, "RAH-CERT-001": _cert_001,
    "RAH-KEY-001": _key_001, "RAH-TOK-001": _tok_001, "RAH-MOD-001": _mod_001, "RAH-SEL-001": _sel_001,
    "RAH-PIN-002": _pin_002, "RAH-PIN-003": _pin_003, "RAH-SVC-001": _svc_001, "RAH-SVC-002": _svc_002,
    "RAH-SVC-003": _svc_003, "RAH-SVC-004": _svc_004, "RAH-SVC-005": _svc_005, "RAH-NET-001": _net_001,
    "RAH-NET-003": _net_003, "RAH-ATT-002": _att_002, "RAH-ATT-003": _att_003, "RAH-ATT-004": _att_004,
    "RAH-ATT-005": _att_005,
}


def _run(run: Run, debug: bool) -> subprocess.CompletedProcess[str]:
    import os

    env = dict(os.environ, **run.env)
    for name in (*run.drop_env, "RAH_DEBUG"):
        env.pop(name, None)
    runner = run_process if run.process else run_cli
    return runner(*run.args, *(["--debug"] if debug else []), env=env, cwd=ROOT)


def test_cases_follow_the_catalogue() -> None:
    rows = catalogue()
    assert set(CLI_CASES) == {code for code, how in rows.items() if how == "CLI"}
    assert set(RENDERED) == {code for code, how in rows.items() if how == "rendered"}


# Cases that take a token fixture by name (Context.fixture) carry its marker here: the markers
# plugin sees only the fixtures a test names in its signature.
_CASE_MARKS = {"RAH-TOK-001": [pytest.mark.tpmkey, pytest.mark.process]}


@pytest.mark.parametrize("code", [pytest.param(code, marks=_CASE_MARKS.get(code, [])) for code in sorted(CLI_CASES)])
def test_catalogued_error_from_the_cli(code: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    for run in CLI_CASES[code](Context(request, tmp_path)):
        plain = _run(run, debug=False)
        shown = f"{run.args[:2]}: {plain.stderr}"
        assert plain.returncode == run.exit_code, shown
        assert plain.stdout == "", shown
        assert run.expect in plain.stderr, shown
        assert plain.stderr.startswith("rolesanywhere-hsm: "), shown
        assert "Traceback" not in plain.stderr and "[RAH-" not in plain.stderr, shown
        assert len(plain.stderr.strip().splitlines()) <= 3, shown
        debug = _run(run, debug=True)
        assert debug.returncode == run.exit_code, debug.stderr
        assert debug.stdout == ""
        assert f"rolesanywhere-hsm: [{code}] " in debug.stderr, debug.stderr


# ---------------------------------------------------------------------------------------------
# Rendered: the error object through the CLI's handler


def _raise(exc: BaseException) -> Callable[[], None]:
    def run() -> None:
        raise exc
    return run


RENDERED: dict[str, tuple[Callable[[], BaseException], str, int]] = {
    "RAH-FILE-002": (lambda: errors.UsageError("Another program has held the lock /x/.lock for more than 30 s.",
                                               code="RAH-FILE-002"), "has held the lock", 2),
    "RAH-SIGN-001": (lambda: errors.TokenSigningError("The key id=01 on token 't' may not sign (CKA_SIGN is false)."),
                     "may not sign", 4),
    "RAH-PIN-001": (lambda: errors.PinError("A PIN problem."), "A PIN problem.", 5),
    "RAH-ATT-001": (lambda: errors.AttestationError("An attestation problem."), "An attestation problem.", 10),
    "RAH-PIN-004": (lambda: errors.PinLockedError("The user PIN of token 't' is locked (not tried)."),
                    "is locked (not tried)", 5),
    "RAH-NET-002": (lambda: errors.CredentialsUnavailableError("no credentials fetched yet"),
                    "no credentials fetched yet", 7),
    "RAH-TLS-001": (lambda: errors.TlsVerificationError("TLS verification of https://x failed: certificate "
                                                        "verify failed."), "TLS verification of", 7),
    "RAH-ANS-001": (lambda: errors.AnswerTooLargeError("The answer of https://x is larger than 1 MiB; it was not "
                                                       "read."), "is larger than 1 MiB", 7),
    "RAH-GEN-001": (lambda: errors.RolesAnywhereError("credential-process failed in the demo (exit 4): x"),
                    "failed in the demo", 1),
    "RAH-BUG-001": (lambda: RuntimeError("boom"), "internal error (RuntimeError)", 1),
    "RAH-ABORT-001": (lambda: KeyboardInterrupt(), "interrupted", 130),
}


@pytest.mark.parametrize("code", sorted(RENDERED))
@pytest.mark.parametrize("debug", [False, True])
def test_catalogued_error_rendered(code: str, debug: bool, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAH_DEBUG", raising=False)
    make, expect, exit_code = RENDERED[code]
    exc = make()
    if isinstance(exc, errors.RolesAnywhereError):
        assert exc.code == code
    with pytest.raises(SystemExit) as info:
        _guarded(_raise(exc), ["credential-process", *(["--debug"] if debug else [])])
    out, err = capsys.readouterr()
    assert info.value.code == exit_code
    assert out == ""
    assert expect in err
    assert ("Traceback" in err) == (debug and code != "RAH-ABORT-001")
    assert (f"rolesanywhere-hsm: [{code}] " in err) == debug, err


def test_doctor_json_carries_the_code_of_the_error_that_failed_a_check(
    request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    import json

    c = Context(request, tmp_path)
    junk = c.junk()
    run = Run(["doctor", "--certificate", junk, "--private-key", junk, *c.arns(), "--endpoint", refused_url(),
               "--json"], "", 8)
    done = _run(run, debug=False)
    assert done.returncode == 8, done.stderr
    checks = {check["name"]: check for check in json.loads(done.stdout)["checks"]}
    assert checks["certificate"]["code"] == "RAH-CERT-001"
    assert checks["key"]["code"] == "RAH-KEY-001"
    assert all("code" not in check for check in checks.values() if check["status"] != "fail")
    assert {check["code"] for check in checks.values() if "code" in check} <= set(catalogue())
