"""One PIN try per process, on tokens that count: the software TPM (its dictionary-attack
lockout counter) and the virtual PIV card (its own count of VERIFY commands and tries left).

Every path that can log in is covered, with a wrong PIN: the terminal prompt (on a pty), the
pin-source file, env: and cmd: forms, RAH_PKCS11_PIN, pin-value, and the context login of an
always-authenticate key (PIV slot 9c, with and without --reuse-pin). Each run must end with
exit 5, the token having seen exactly one wrong PIN, and nothing sent to the service. An empty
PIN, from each source, must not reach the token at all.

The long-running front ends (serve, update, the boto3 provider) and their refresh loops are
covered in test_pin_lockout_servers.py, with these helpers.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
from tests.tokens.tpm import TpmToken
from tests.tokens.yubikey import VirtualYubiKey

ROOT = Path(__file__).parents[2]
WRONG = "97531864"


def _cli_args(server: Emulator, *args: str, command: str = "credential-process") -> list[str]:
    return [sys.executable, "-m", "rolesanywhere_hsm", command, *args,
            "--trust-anchor-arn", server.trust_anchor_arn, "--profile-arn", server.profile_arn,
            "--role-arn", server.role_arn, "--endpoint", server.url]


def run_cli(server: Emulator, env: dict[str, str], *args: str,
            command: str = "credential-process") -> subprocess.CompletedProcess[str]:
    """No terminal (a new session): a missing PIN fails instead of prompting."""
    return subprocess.run(_cli_args(server, *args, command=command), capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120, stdin=subprocess.DEVNULL, start_new_session=True)


def run_cli_typing(server: Emulator, env: dict[str, str], typed: str, *args: str,
                   command: str = "credential-process") -> tuple[int, str, bytes]:
    """Run the CLI with a pty as its controlling terminal and type `typed` at the PIN prompt.
    Returns (exit status, stderr, what the terminal showed)."""
    import pty

    master, slave = pty.openpty()

    def make_controlling_tty() -> None:
        import fcntl
        import termios

        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    child = subprocess.Popen(
        _cli_args(server, *args, command=command), preexec_fn=make_controlling_tty,  # noqa: PLW1509
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(slave,),
        env=env, cwd=ROOT, text=True,
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while b"PIN for token" not in seen and time.monotonic() < deadline and child.poll() is None:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    seen += os.read(master, 1024)
                except OSError:
                    break
        assert b"PIN for token" in seen, (seen, child.poll())
        time.sleep(0.1)
        os.write(master, typed.encode() + b"\n")
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(master)
    return child.returncode, err, seen


def _with_query(uri: str, query: str) -> str:
    return uri + ("&" if "?" in uri else "?") + query


# Each login path: (name, how it sets the PIN) -> (extra env, URI query to add).
def _paths(tmp_path: Path, pin: str) -> dict[str, tuple[dict[str, str], str | None]]:
    pin_file = tmp_path / "pin"
    pin_file.write_text(pin + "\n")
    pin_file.chmod(0o600)
    command = f"cmd:{sys.executable} -c 'print(\"{pin}\")'"
    return {
        "pin-value": ({}, f"pin-value={pin}" if pin else "pin-value="),
        "pin-source-file": ({}, f"pin-source=file:{pin_file}"),
        "pin-source-env": ({"LOCKOUT_TEST_PIN": pin}, "pin-source=env:LOCKOUT_TEST_PIN"),
        "pin-source-cmd": ({}, "pin-source=" + command.replace(" ", "%20").replace('"', "%22")),
        "RAH_PKCS11_PIN": ({"RAH_PKCS11_PIN": pin}, None),
    }


PATHS = ["pin-value", "pin-source-file", "pin-source-env", "pin-source-cmd", "RAH_PKCS11_PIN"]


# -- TPM ---------------------------------------------------------------------------------------


@pytest.fixture
def tpm_server(tpm_token: TpmToken) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig.for_certificates([tpm_token.ca.certificate])) as emulator:
        yield emulator


@pytest.mark.tpm
@pytest.mark.parametrize("path", PATHS)
def test_tpm_wrong_pin_is_tried_once(tpm: TpmToken, tpm_server: Emulator, tmp_path: Path, path: str) -> None:
    env_extra, query = _paths(tmp_path, WRONG)[path]
    uri = tpm.uri_for("ec", type="cert")
    before = tpm.lockout_counter()
    result = run_cli(tpm_server, {**tpm.subprocess_env(), **env_extra},
                     "--certificate", _with_query(uri, query) if query else uri)
    assert result.returncode == 5, result.stderr
    assert "refused the PIN" in result.stderr and WRONG not in result.stderr
    assert result.stdout == ""
    assert tpm.lockout_counter() == before + 1  # the TPM counted exactly one failure
    assert tpm_server.requests == []


@pytest.mark.tpm
def test_tpm_wrong_pin_at_the_prompt_is_tried_once(tpm: TpmToken, tpm_server: Emulator) -> None:
    before = tpm.lockout_counter()
    code, err, shown = run_cli_typing(tpm_server, tpm.subprocess_env(), WRONG,
                                      "--certificate", tpm.uri_for("ec", type="cert"))
    assert code == 5, err
    assert WRONG.encode() not in shown and WRONG not in err  # echo was off
    assert tpm.lockout_counter() == before + 1
    assert tpm_server.requests == []


@pytest.mark.tpm
@pytest.mark.parametrize("path", PATHS)
def test_tpm_empty_pin_never_reaches_the_token(tpm: TpmToken, tpm_server: Emulator, tmp_path: Path,
                                               path: str) -> None:
    env_extra, query = _paths(tmp_path, "")[path]
    uri = tpm.uri_for("ec", type="cert")
    before = tpm.lockout_counter()
    result = run_cli(tpm_server, {**tpm.subprocess_env(), **env_extra},
                     "--certificate", _with_query(uri, query) if query else uri)
    assert result.returncode == 5, result.stderr
    assert "The PIN is empty" in result.stderr
    assert tpm.lockout_counter() == before


@pytest.mark.tpm
def test_tpm_enter_at_the_prompt_is_not_sent(tpm: TpmToken, tpm_server: Emulator) -> None:
    before = tpm.lockout_counter()
    code, err, _ = run_cli_typing(tpm_server, tpm.subprocess_env(), "",
                                  "--certificate", tpm.uri_for("ec", type="cert"))
    assert code == 5 and "The PIN is empty" in err
    assert tpm.lockout_counter() == before


# -- virtual PIV card --------------------------------------------------------------------------


@pytest.fixture
def piv_server(virtual_yubikey: VirtualYubiKey) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig.for_certificates([virtual_yubikey.ca.certificate])) as emulator:
        yield emulator


def _assert_one_wrong_try(yubikey: VirtualYubiKey, err: str, code: int) -> None:
    assert code == 5, err
    assert WRONG not in err
    assert yubikey.status()["verify_attempts"] == 1  # counted by the card itself
    assert yubikey.pin_retries_left() == 2


@pytest.mark.yubikey
@pytest.mark.parametrize("path", PATHS)
def test_piv_wrong_pin_is_tried_once(yubikey: VirtualYubiKey, piv_server: Emulator, tmp_path: Path,
                                     path: str) -> None:
    module = yubikey.ykcs11_module
    env_extra, query = _paths(tmp_path, WRONG)[path]
    uri = yubikey.uri_for("9a", module, type="cert", by_label=True)
    result = run_cli(piv_server, {**yubikey.subprocess_env(module), **env_extra},
                     "--certificate", _with_query(uri, query) if query else uri)
    _assert_one_wrong_try(yubikey, result.stderr, result.returncode)
    assert result.stdout == "" and piv_server.requests == []


@pytest.mark.yubikey
def test_piv_wrong_pin_at_the_prompt_is_tried_once(yubikey: VirtualYubiKey, piv_server: Emulator,
                                                   piv_module: str) -> None:
    code, err, shown = run_cli_typing(piv_server, yubikey.subprocess_env(piv_module), WRONG,
                                      "--certificate", yubikey.uri_for("9a", piv_module, type="cert",
                                                                       by_label=True))
    _assert_one_wrong_try(yubikey, err, code)
    assert WRONG.encode() not in shown
    assert piv_server.requests == []


@pytest.mark.yubikey
@pytest.mark.parametrize("path", PATHS)
def test_piv_empty_pin_never_reaches_the_card(yubikey: VirtualYubiKey, piv_server: Emulator,
                                              tmp_path: Path, path: str) -> None:
    module = yubikey.ykcs11_module
    env_extra, query = _paths(tmp_path, "")[path]
    uri = yubikey.uri_for("9a", module, type="cert", by_label=True)
    result = run_cli(piv_server, {**yubikey.subprocess_env(module), **env_extra},
                     "--certificate", _with_query(uri, query) if query else uri)
    assert result.returncode == 5 and "The PIN is empty" in result.stderr, result.stderr
    assert yubikey.status()["verify_attempts"] == 0
    assert yubikey.pin_retries_left() == 3


@pytest.mark.yubikey
def test_piv_9c_with_reuse_pin_and_a_wrong_pin_is_tried_once(
    yubikey: VirtualYubiKey, piv_server: Emulator, piv_module: str
) -> None:
    env = dict(yubikey.subprocess_env(piv_module), RAH_PKCS11_PIN=WRONG)
    result = run_cli(piv_server, env, "--reuse-pin", "--certificate",
                     yubikey.uri_for("9c", piv_module, type="cert", by_label=True))
    _assert_one_wrong_try(yubikey, result.stderr, result.returncode)
    assert yubikey.status()["signatures"] == {}


@pytest.mark.yubikey
def test_piv_9c_wrong_context_pin_is_tried_once(
    yubikey: VirtualYubiKey, piv_server: Emulator, piv_module: str, tmp_path: Path
) -> None:
    """The user login succeeds, then the context login before the signature (CKA_ALWAYS_
    AUTHENTICATE, no --reuse-pin) asks the PIN source again, which now gives a wrong PIN: it is
    presented once and the run ends; no signature, no third VERIFY."""
    counter = tmp_path / "calls"
    script = tmp_path / "pin.py"
    script.write_text(
        "import pathlib, sys\n"
        f"c = pathlib.Path({str(counter)!r})\n"
        "n = int(c.read_text()) if c.exists() else 0\n"
        "c.write_text(str(n + 1))\n"
        f"print({yubikey.pin!r} if n == 0 else {WRONG!r})\n"
    )
    source = f"cmd:{sys.executable} {script}"
    uri = _with_query(yubikey.uri_for("9c", piv_module, type="cert", by_label=True),
                      "pin-source=" + source.replace(" ", "%20"))
    result = run_cli(piv_server, yubikey.subprocess_env(piv_module), "--certificate", uri)
    assert result.returncode == 5, result.stderr
    assert WRONG not in result.stderr and "context PIN" in result.stderr
    assert counter.read_text() == "2"  # the source was asked for the login and the context login
    status = yubikey.status()
    assert status["verify_attempts"] == 2  # the right login, then the one wrong context PIN
    assert status["signatures"] == {}
    assert yubikey.pin_retries_left() == 2
    assert piv_server.requests == []
