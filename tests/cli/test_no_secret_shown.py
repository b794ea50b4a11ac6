"""No secret is ever shown: every command, on every failure path we can reach, with and without
--debug, run through the console script's own `main` (tests.clirunner.run_cli: stdout, stderr
and file descriptors 1 and 2 captured), with marker secrets; the `emulator` command as a process.

Markers: the token's PIN (a real SoftHSM token whose PIN *is* the marker, so that the paths
after a good login are reached too), a wrong PIN, a key file's password, a wrong password, a
credential in an endpoint URL, and the secret key and session token the emulator issues. A
marker must not appear in stderr, in stdout (except the credentials a successful
`credential-process` prints: what the user asked for), in any file the run writes (the working
directory and HOME are a fresh directory per run), nor in the emulator's log.

Known leaks this covers (issue 7): a pkcs11: URI taken for a file name (a leading space,
`pkcs11;`, `pkcs:`) echoed with its pin-value in "Cannot read the certificate file ...", a
pin-value containing `&`, a PIN typed where a pin-source goes, a stray argument after
--reuse-pin.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, new_private_key, write_pem
from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
from rolesanywhere_hsm._dev.softhsm import SoftHsmToken
from tests.clirunner import run_cli

ROOT = Path(__file__).parents[2]

PIN = "PinMark7f3a9c"  # the token's real PIN
WRONG_PIN = "WrongMark1b2c"
PASSWORD = "PwdMark5e6d"  # the key file's real password
WRONG_PASSWORD = "BadPwdMark3c4d"
URL_SECRET = "UrlMark9a8b"
MARKERS = (PIN, WRONG_PIN, PASSWORD, WRONG_PASSWORD, URL_SECRET)
LABEL = "rah-secrets"
CERT_URI = f"pkcs11:token={LABEL};object=k;type=cert"


@dataclass
class World:
    token: SoftHsmToken
    emulator: Emulator
    key_file: Path  # PKCS#8, encrypted with PASSWORD
    cert_file: Path  # its certificate (trusted by the emulator)
    other_cert_file: Path  # a certificate of another key
    pin_file: Path  # holds PIN, mode 0600
    closed_port: int

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAH_"))}
        env.update(self.token.env, RAH_PKCS11_MODULE=self.token.module, HOME=str(home))
        env.update(extra)
        return env

    def arns(self, *, endpoint: str | None = None, anchor: str | None = None) -> list[str]:
        return ["--trust-anchor-arn", anchor or self.emulator.trust_anchor_arn,
                "--profile-arn", self.emulator.profile_arn, "--role-arn", self.emulator.role_arn,
                "--endpoint", endpoint or self.emulator.url]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once closed


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, softhsm_module: str,
          root_ca: CertificateAuthority) -> Iterator[World]:
    from cryptography.hazmat.primitives import serialization

    directory = tmp_path_factory.mktemp("secrets")
    token = SoftHsmToken.create(directory / "hsm", LABEL, PIN, "SoPinMark0000", module=softhsm_module)
    token.add_key("p256", "k", b"\x01", root_ca)
    key = new_private_key("p256")
    key_file = directory / "key.pem"
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSWORD.encode())))
    cert_file = write_pem(directory / "leaf.crt", root_ca.issue_leaf(key.public_key(), "secrets-leaf"))
    other = write_pem(directory / "other.crt",
                      root_ca.issue_leaf(new_private_key("p256").public_key(), "other-leaf"))
    pin_file = directory / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    with Emulator(EmulatorConfig.for_certificates([root_ca.certificate])) as emulator:
        yield World(token, emulator, key_file, cert_file, other, pin_file, _closed_port())


# -- the runs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One command line; `code` is the documented exit code (checked without --debug)."""

    name: str
    args: Callable[[World], list[str]]
    code: int
    env: Callable[[World], dict[str, str]] = lambda w: {}


def _cp(*args: str) -> Callable[[World], list[str]]:
    return lambda w: ["credential-process", *args, *w.arns()]


CASES = [
    # A pkcs11: URI taken for a file name, echoed in "Cannot read the certificate file ...".
    Case("uri-with-leading-space", _cp("--certificate", f" {CERT_URI}?pin-value={PIN}"), 3),
    Case("uri-pkcs11-semicolon", _cp("--certificate", f"pkcs11;token={LABEL};object=k?pin-value={PIN}"), 3),
    Case("uri-pkcs-colon", _cp("--certificate", f"pkcs:token={LABEL};object=k?pin-value={PIN}"), 3),
    Case("uri-as-intermediates", _cp("--certificate", CERT_URI, "--intermediates",
                                     f" {CERT_URI}?pin-value={PIN}"), 3,
         env=lambda w: {"RAH_PKCS11_PIN": PIN}),
    # A pin-value with an unencoded '&': its tail must not be shown as an "attribute".
    Case("pin-value-with-ampersand", _cp("--certificate", f"{CERT_URI}?pin-value=12&{PIN}"), 2),
    Case("pin-value-with-ampersand-like-attribute",
         _cp("--certificate", f"{CERT_URI}?pin-value=12&{PIN}=x"), 2),
    Case("pin-value-with-semicolon", _cp("--certificate", f"{CERT_URI}?pin-value=12;{PIN}"), 2),
    # A PIN typed where a pin-source goes.
    Case("pin-as-pin-source", _cp("--certificate", f"{CERT_URI}?pin-source={PIN}"), 5),
    Case("pin-as-pin-source-env", _cp("--certificate", f"{CERT_URI}?pin-source=env:{PIN}"), 5),
    # A stray argument after --reuse-pin (the PIN typed as its value).
    Case("stray-argument", _cp("--certificate", CERT_URI, "--reuse-pin", PIN), 2),
    Case("pin-as-option-value", _cp("--certificate", CERT_URI, "--session-duration", PIN), 2),
    # A wrong PIN, from each non-interactive source.
    Case("wrong-pin-env", _cp("--certificate", CERT_URI), 5, env=lambda w: {"RAH_PKCS11_PIN": WRONG_PIN}),
    Case("wrong-pin-value", _cp("--certificate", f"{CERT_URI}?pin-value={WRONG_PIN}"), 5),
    # The right PIN, then a failure further on.
    Case("unknown-object", _cp("--certificate", f"pkcs11:token={LABEL};object=nope?pin-value={PIN}"), 4),
    Case("service-refuses",
         lambda w: ["credential-process", "--certificate", f"{CERT_URI}?pin-value={PIN}",
                    *w.arns(anchor=w.emulator.trust_anchor_arn[:-4] + "ffff")], 6),
    Case("nothing-listening",
         lambda w: ["credential-process", "--certificate", f"{CERT_URI}?pin-source=file:{w.pin_file}",
                    *w.arns(endpoint=f"http://127.0.0.1:{w.closed_port}")], 7),
    Case("endpoint-with-credentials",
         lambda w: ["credential-process", "--certificate", CERT_URI,
                    *w.arns(endpoint=f"http://user:{URL_SECRET}@127.0.0.1:{w.closed_port}")], 7,
         env=lambda w: {"RAH_PKCS11_PIN": PIN}),
    Case("proxy-with-credentials", _cp("--certificate", CERT_URI), 7,
         env=lambda w: {"RAH_PKCS11_PIN": PIN, "NO_PROXY": "", "no_proxy": "",
                        **{name: f"http://user:{URL_SECRET}@127.0.0.1:{w.closed_port}/"
                           for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy",
                                        "https_proxy", "all_proxy")}}),
    Case("module-missing", _cp("--certificate", f"{CERT_URI}?pin-value={PIN}&module-path=/nonexistent.so"), 4),
    # Key files with a password.
    Case("wrong-password",
         lambda w: ["credential-process", "--certificate", str(w.cert_file), "--private-key", str(w.key_file),
                    "--pkcs8-password", WRONG_PASSWORD, *w.arns()], 3),
    Case("password-then-key-mismatch",
         lambda w: ["credential-process", "--certificate", str(w.other_cert_file),
                    "--private-key", str(w.key_file), *w.arns()], 3,
         env=lambda w: {"RAH_PKCS8_PASSWORD": PASSWORD}),
    Case("password-then-nothing-listening",
         lambda w: ["credential-process", "--certificate", str(w.cert_file), "--private-key", str(w.key_file),
                    "--pkcs8-password", PASSWORD, *w.arns(endpoint=f"http://127.0.0.1:{w.closed_port}")], 7),
    Case("password-as-key-file", lambda w: ["credential-process", "--certificate", str(w.cert_file),
                                            "--private-key", f" pkcs11:x?pin-value={PASSWORD}", *w.arns()], 3),
    # The other commands.
    Case("read-certificate-data-file-name",
         lambda w: ["read-certificate-data", "--certificate", f" {CERT_URI}?pin-value={PIN}"], 3),
    Case("read-certificate-data-pin-value",  # works (no login), and prints no PIN back
         lambda w: ["read-certificate-data", "--certificate", f"{CERT_URI}?pin-value={PIN}"], 0),
    Case("sign-string-unknown-object",
         lambda w: ["sign-string", "--certificate", f"pkcs11:token={LABEL};object=nope?pin-value={PIN}"], 4),
    Case("sign-string-wrong-pin",
         lambda w: ["sign-string", "--certificate", f"{CERT_URI}?pin-source=env:THE_PIN"], 5,
         env=lambda w: {"THE_PIN": WRONG_PIN}),
    Case("sign-string-good", lambda w: ["sign-string", "--certificate", f"{CERT_URI}?pin-value={PIN}"], 0),
    Case("sign-string-wrong-password",
         lambda w: ["sign-string", "--certificate", str(w.cert_file), "--private-key", str(w.key_file),
                    "--pkcs8-password", WRONG_PASSWORD], 3),
    Case("sign-string-stray", lambda w: ["sign-string", "--certificate", CERT_URI, "--reuse-pin", PIN], 2),
    Case("emulator-config-file-name",
         lambda w: ["emulator", "--config", f" {CERT_URI}?pin-value={PIN}"], 2),
    Case("emulator-ca-file-name", lambda w: ["emulator", "--ca", f"pkcs11;x?pin-value={PIN}"], 2),
    Case("emulator-stray", lambda w: ["emulator", "--ca", "x.pem", PIN], 2),
]


def _run(world: World, case: Case, debug: bool, workdir: Path) -> subprocess.CompletedProcess[str]:
    args = case.args(world) + (["--debug"] if debug else [])
    # Stray-argument cases: --debug goes before the stray value so that it is still parsed.
    if debug and PIN in args[-2:]:
        args = case.args(world)[:-1] + ["--debug", case.args(world)[-1]]
    # In-process, through the console script's main; no terminal, so nothing can prompt; what
    # reaches file descriptors 1 and 2 (a module's own output) is captured too.
    return run_cli(*args, env=world.env(workdir, **case.env(world)), cwd=workdir)


def _files_with_markers(directory: Path, markers: tuple[str, ...]) -> list[str]:
    found = []
    for path in directory.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {m}" for m in markers if m.encode() in data]
    return found


def assert_no_marker(text: str, markers: tuple[str, ...], where: str) -> None:
    for marker in markers:
        assert marker not in text, f"{marker!r} shown in {where}:\n{text}"


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_no_marker_in_any_output(world: World, case: Case, debug: bool, tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    workdir.mkdir()
    result = _run(world, case, debug, workdir)
    assert_no_marker(result.stderr, MARKERS, "stderr")
    assert_no_marker(result.stdout, MARKERS, "stdout")
    assert _files_with_markers(workdir, MARKERS) == []
    if not debug:
        assert result.returncode == case.code, result.stderr
        if case.code:
            assert result.stdout == ""
            assert "Traceback" not in result.stderr
            assert result.stderr.strip(), "a failure says why"
    else:
        assert (result.returncode == 0) == (case.code == 0), result.stderr


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_issued_credentials_only_on_stdout(world: World, debug: bool, tmp_path: Path) -> None:
    """A good run: the secret key and session token are on stdout (asked for), nowhere else;
    the PIN nowhere."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    case = Case("good", _cp("--certificate", f"{CERT_URI}?pin-source=file:{world.pin_file}"), 0)
    result = _run(world, case, debug, workdir)
    assert result.returncode == 0, result.stderr
    issued = world.emulator.last_issued
    secrets = (issued.secret_access_key, issued.session_token)
    assert json.loads(result.stdout)["SecretAccessKey"] == issued.secret_access_key
    assert_no_marker(result.stderr, MARKERS + secrets, "stderr")
    assert_no_marker(result.stdout, MARKERS, "stdout")
    assert _files_with_markers(workdir, MARKERS + secrets) == []
    if debug:
        assert "rolesanywhere_hsm" in result.stderr  # the debug log did run


def _wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if process.poll() is not None:
            raise AssertionError(f"emulator exited: {process.communicate()}")
        time.sleep(0.05)
    raise AssertionError("emulator did not start")


def test_emulator_command_logs_no_secret(world: World, root_ca: CertificateAuthority, tmp_path: Path) -> None:
    """The `emulator` command serving a good and a failing credential-process (with --debug):
    its log holds neither the issued secret key and session token nor the client's PIN."""
    ca_file = write_pem(tmp_path / "ca.crt", root_ca.certificate)
    workdir = tmp_path / "run"
    workdir.mkdir()
    port_file = workdir / "port"
    env = world.env(workdir)
    server = subprocess.Popen(
        [sys.executable, "-m", "rolesanywhere_hsm", "emulator", "--ca", str(ca_file),
         "--port-file", str(port_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=workdir,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        port = _wait_for(port_file, server)
        from rolesanywhere_hsm.emulator import EmulatorConfig as _Config

        config = _Config.for_certificates([root_ca.certificate])
        common = ["--trust-anchor-arn", config.trust_anchor_arn, "--profile-arn", config.profile_arn,
                  "--role-arn", config.role_arn, "--endpoint", f"http://127.0.0.1:{port}", "--debug"]
        good = subprocess.run(
            [sys.executable, "-m", "rolesanywhere_hsm", "credential-process",
             "--certificate", f"{CERT_URI}?pin-value={PIN}", *common],
            capture_output=True, text=True, env=env, cwd=workdir, timeout=120, stdin=subprocess.DEVNULL,
        )
        assert good.returncode == 0, good.stderr
        credentials = json.loads(good.stdout)
        secrets = (credentials["SecretAccessKey"], credentials["SessionToken"])
        refused = subprocess.run(
            [sys.executable, "-m", "rolesanywhere_hsm", "credential-process",
             "--certificate", f"{CERT_URI}?pin-value={PIN}", *common[:1],
             config.trust_anchor_arn[:-4] + "ffff", *common[2:]],
            capture_output=True, text=True, env=env, cwd=workdir, timeout=120, stdin=subprocess.DEVNULL,
        )
        assert refused.returncode != 0
        for result in (good, refused):
            assert_no_marker(result.stderr, MARKERS + secrets, "credential-process stderr")
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert "issued" in err  # the log did record the requests
    assert_no_marker(out + err, MARKERS + secrets, "the emulator's log")
    assert _files_with_markers(workdir, MARKERS + secrets) == []


def test_demo_shows_no_pin(tmp_path: Path) -> None:
    """`demo --debug --keep DIR`: the throwaway token's PIN stays in its 0600 PIN file; the
    credentials the demo prints are the point of the demo (stdout), never on stderr."""
    keep = tmp_path / "keep"
    workdir = tmp_path / "run"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAH_"))}
    env["HOME"] = str(workdir)
    result = subprocess.run(
        [sys.executable, "-m", "rolesanywhere_hsm", "demo", "--keep", str(keep), "--debug"],
        capture_output=True, text=True, env=env, cwd=workdir, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    pin = (keep / "pin.txt").read_text().strip()
    assert len(pin) >= 8
    assert (keep / "pin.txt").stat().st_mode & 0o077 == 0
    credentials = json.loads(result.stdout[result.stdout.index("{"):result.stdout.rindex("}") + 1])
    secrets = (pin, credentials["SecretAccessKey"], credentials["SessionToken"])
    assert_no_marker(result.stderr, secrets, "demo stderr")
    assert pin not in result.stdout
    assert _files_with_markers(workdir, secrets) == []


# -- the long-running commands: serve and update -----------------------------------------------


def _long_running_args(world: World, command: str, workdir: Path, certificate: str) -> list[str]:
    args = [command, "--certificate", certificate, *world.arns()]
    if command == "serve":
        args += ["--port", "0", "--port-file", str(workdir / "port")]
    return args


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
@pytest.mark.parametrize("command", ["serve", "update"])
def test_long_running_commands_log_no_pin_value(world: World, command: str, debug: bool, tmp_path: Path) -> None:
    """`serve` and `update` with the PIN in the URI's pin-value, through a start, several
    refreshes (4-second credentials) and SIGTERM: their log lines (with --debug: every debug
    line of the signer, the session and the refresh engine) never show it, nor the issued
    secret key and session token."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    args = _long_running_args(world, command, workdir, f"{CERT_URI}?pin-value={PIN}")
    world.emulator.config.credential_lifetime = 4
    before = len(world.emulator.issued)
    try:
        with (workdir / "stderr").open("w") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "rolesanywhere_hsm", *args, *(["--debug"] if debug else [])],
                stdout=subprocess.DEVNULL, stderr=err, text=True, env=world.env(workdir), cwd=workdir,
                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while len(world.emulator.issued) < before + 3 and time.monotonic() < deadline:
                assert process.poll() is None, (workdir / "stderr").read_text()
                time.sleep(0.1)
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(30)
    finally:
        world.emulator.config.credential_lifetime = None
    stderr = (workdir / "stderr").read_text()
    assert code == 0, stderr
    assert len(world.emulator.issued) >= before + 3, stderr  # the first fetch and two refreshes
    secrets = tuple(s for issued in world.emulator.issued[before:]
                    for s in (issued.secret_access_key, issued.session_token))
    assert_no_marker(stderr, MARKERS + secrets, f"{command} stderr")
    if debug:
        assert "rolesanywhere_hsm.pkcs11: certificate" in stderr  # the debug log did run
    written = [f for f in _files_with_markers(workdir, MARKERS) if not f.startswith(str(workdir / "stderr"))]
    assert written == []


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
@pytest.mark.parametrize("command", ["serve", "update"])
def test_long_running_commands_with_a_wrong_pin_value(world: World, command: str, debug: bool,
                                                      tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    workdir.mkdir()
    args = _long_running_args(world, command, workdir, f"{CERT_URI}?pin-value={WRONG_PIN}")
    result = subprocess.run(
        [sys.executable, "-m", "rolesanywhere_hsm", *args, *(["--debug"] if debug else [])],
        capture_output=True, text=True, env=world.env(workdir), cwd=workdir, timeout=120,
        stdin=subprocess.DEVNULL, start_new_session=True)
    assert result.returncode == 5, result.stderr
    assert "refused the PIN" in result.stderr
    assert_no_marker(result.stderr + result.stdout, MARKERS, f"{command} output")
    assert _files_with_markers(workdir, MARKERS) == []


@pytest.fixture
def restore_loggers() -> Iterator[None]:
    import logging

    names = ("rolesanywhere_hsm.refresh", "rolesanywhere_hsm.servers", "rolesanywhere_hsm.httpserver",
             "rolesanywhere_hsm.session", "rolesanywhere_hsm.update")
    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).level,
                 logging.getLogger(n).propagate) for n in names}
    yield
    for n, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(n)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.mark.usefixtures("restore_loggers")
@pytest.mark.parametrize("command", ["serve", "update"])
def test_the_log_handlers_of_serve_and_update_redact(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The stderr handlers `serve` and `update` install (without --debug) pass each line
    through RedactingFilter: a log line quoting a URI loses its pin-value."""
    import logging

    if command == "serve":
        from rolesanywhere_hsm.cli.serve import _life
    else:
        from rolesanywhere_hsm.cli.update import _life
    with _life(False, []):
        for name in ("rolesanywhere_hsm.refresh", "rolesanywhere_hsm.session"):
            logging.getLogger(name).warning("opening %s again", f"{CERT_URI}?pin-value={PIN}")
    err = capsys.readouterr().err
    assert err.count("opening pkcs11:token=") == 2, err
    assert PIN not in err
