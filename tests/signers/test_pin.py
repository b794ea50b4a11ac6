"""PIN sources: the order of the policy, each source's forms, and the /dev/tty prompt."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rolesanywhere_hsm.errors import PinUnavailableError
from rolesanywhere_hsm.signers.pin import (
    PIN_ENV_VAR,
    PinSourceKind,
    ProtectedAuthentication,
    read_pin_source,
)
from rolesanywhere_hsm.signers.secretpolicy import PinRequest, resolve_pin


def _no_prompt(description: str) -> str:
    raise AssertionError(f"prompted for {description}")


def test_order_uri_value_first(tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text("from-file\n")
    request = PinRequest("PIN", pin_value="from-uri", environ={PIN_ENV_VAR: "from-env"},
                         prompt=_no_prompt)
    assert resolve_pin(request) == ("from-uri", PinSourceKind.URI_PIN_VALUE)


def test_order_pin_source_before_environment(tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text("from-file\nsecond line ignored\n")
    request = PinRequest("PIN", pin_source=f"file:{pin_file}", environ={PIN_ENV_VAR: "from-env"},
                         prompt=_no_prompt)
    assert resolve_pin(request) == ("from-file", PinSourceKind.URI_PIN_SOURCE)


def test_order_environment_before_protected_path_and_callback() -> None:
    request = PinRequest("PIN", environ={PIN_ENV_VAR: "from-env"}, protected_authentication_path=True,
                         callback=_no_prompt, prompt=_no_prompt)
    assert resolve_pin(request) == ("from-env", PinSourceKind.ENVIRONMENT)


def test_protected_authentication_path_needs_no_pin() -> None:
    request = PinRequest("PIN", environ={}, protected_authentication_path=True, prompt=_no_prompt)
    assert resolve_pin(request) == (ProtectedAuthentication, PinSourceKind.PROTECTED_PATH)


def test_callback_before_prompt_and_prompt_last() -> None:
    asked: list[str] = []
    request = PinRequest("PIN for token 'x'", environ={}, callback=lambda d: asked.append(d) or "cb",
                         prompt=_no_prompt)
    assert resolve_pin(request) == ("cb", PinSourceKind.CALLBACK)
    assert asked == ["PIN for token 'x'"]
    request = PinRequest("PIN for token 'x'", environ={}, prompt=lambda d: "typed")
    assert resolve_pin(request) == ("typed", PinSourceKind.PROMPT)


def test_request_repr_hides_pin_value() -> None:
    assert "S3cret" not in repr(PinRequest("PIN", pin_value="S3cret"))


@pytest.mark.parametrize("form", ["file:{p}", "file://{p}", "file://localhost{p}", "{p}"])
def test_pin_source_file_forms(tmp_path: Path, form: str) -> None:
    pin_file = tmp_path / "pin file"
    pin_file.write_text("1234\r\n")
    source = form.format(p=str(pin_file).replace(" ", "%20") if form.startswith("file") else pin_file)
    assert read_pin_source(source) == "1234"


def test_pin_source_missing_file_names_the_file_only(tmp_path: Path) -> None:
    with pytest.raises(PinUnavailableError, match="Cannot read the PIN file"):
        read_pin_source(str(tmp_path / "absent"))


def test_pin_source_env() -> None:
    assert read_pin_source("env:MY_PIN", {"MY_PIN": "4321"}) == "4321"
    with pytest.raises(PinUnavailableError, match="MY_PIN, which is not set"):
        read_pin_source("env:MY_PIN", {})


def test_pin_source_cmd_runs_without_shell() -> None:
    source = f"cmd:{sys.executable} -c 'print(\"9876\"); print(\"x\")'"
    assert read_pin_source(source) == "9876"
    # Shell syntax is not interpreted: "$HOME" reaches the program verbatim.
    assert read_pin_source(f"cmd:{sys.executable} -c 'import sys; print(sys.argv[1])' '$HOME'") == "$HOME"


def test_pin_source_cmd_failure_does_not_show_output() -> None:
    source = f"cmd:{sys.executable} -c 'print(\"S3cret\"); raise SystemExit(3)'"
    with pytest.raises(PinUnavailableError) as info:
        read_pin_source(source)
    assert "exit status 3" in info.value.message
    assert "S3cret" not in info.value.diagnostics()
    with pytest.raises(PinUnavailableError, match="not found"):
        read_pin_source("cmd:/nonexistent/pin-helper")


def test_unknown_pin_source_form() -> None:
    with pytest.raises(PinUnavailableError, match="not understood"):
        read_pin_source("relative/path")


_PROMPT_SCRIPT = (
    "import sys\n"
    "from rolesanywhere_hsm.errors import PinUnavailableError\n"
    "from rolesanywhere_hsm.signers.pin import prompt_on_tty\n"
    "try:\n"
    "    print('GOT:' + prompt_on_tty('PIN for token test'))\n"
    "except PinUnavailableError as exc:\n"
    "    print('UNAVAILABLE:' + exc.message)\n"
)


def test_no_terminal_fails_fast_instead_of_hanging() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _PROMPT_SCRIPT], start_new_session=True,  # setsid: no tty
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20,
    )
    assert done.stdout.startswith("UNAVAILABLE:"), done.stdout + done.stderr
    assert "no terminal" in done.stdout
    assert time.monotonic() - started < 10


def _start_prompt_on_pty() -> tuple[subprocess.Popen[bytes], int, int]:
    """The prompt script on a pty that is its controlling terminal, once the prompt shows.
    Returns (child, master fd, slave fd); the caller closes both fds."""
    master, slave = pty.openpty()

    def make_controlling_tty() -> None:
        import fcntl
        import termios

        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    child = subprocess.Popen(
        [sys.executable, "-c", _PROMPT_SCRIPT], preexec_fn=make_controlling_tty,  # noqa: PLW1509
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(slave,),
    )
    seen = b""
    deadline = time.monotonic() + 20
    while b"PIN for token test: " not in seen and time.monotonic() < deadline:
        if select.select([master], [], [], 0.5)[0]:
            seen += os.read(master, 1024)
    assert b"PIN for token test: " in seen
    return child, master, slave


def test_prompt_uses_the_terminal_with_echo_off_never_stdout() -> None:
    child, master, slave = _start_prompt_on_pty()
    os.close(slave)
    seen = b""
    time.sleep(0.1)  # let the child switch echo off (it did before writing the prompt)
    os.write(master, b"S3cret-pin\n")
    out, err = child.communicate(timeout=20)
    while select.select([master], [], [], 0.2)[0]:
        try:
            chunk = os.read(master, 1024)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert out.decode().strip() == "GOT:S3cret-pin"
    assert b"S3cret" not in seen  # echo was off
    assert b"PIN for token" not in out + err  # the prompt went to the terminal only


# -- empty PINs are never sent ------------------------------------------------------------------


def _empty_requests(tmp_path: Path) -> list[tuple[PinRequest, PinSourceKind]]:
    empty_file = tmp_path / "empty-pin"
    empty_file.write_text("")
    empty_file.chmod(0o600)
    newline_file = tmp_path / "newline-pin"
    newline_file.write_text("\n1234\n")  # the first line is the PIN, and it is empty
    newline_file.chmod(0o600)
    command = f"cmd:{sys.executable} -c 'print()'"
    return [
        (PinRequest("PIN", pin_value="", prompt=_no_prompt), PinSourceKind.URI_PIN_VALUE),
        (PinRequest("PIN", pin_source=str(empty_file), prompt=_no_prompt), PinSourceKind.URI_PIN_SOURCE),
        (PinRequest("PIN", pin_source=f"file:{newline_file}", prompt=_no_prompt), PinSourceKind.URI_PIN_SOURCE),
        (PinRequest("PIN", pin_source="env:EMPTY_PIN", environ={"EMPTY_PIN": ""}, prompt=_no_prompt),
         PinSourceKind.URI_PIN_SOURCE),
        (PinRequest("PIN", pin_source=command, prompt=_no_prompt), PinSourceKind.URI_PIN_SOURCE),
        (PinRequest("PIN", environ={PIN_ENV_VAR: ""}, prompt=_no_prompt), PinSourceKind.ENVIRONMENT),
        (PinRequest("PIN", environ={}, callback=lambda d: "", prompt=_no_prompt), PinSourceKind.CALLBACK),
        (PinRequest("PIN", environ={}, prompt=lambda d: ""), PinSourceKind.PROMPT),  # Enter at the prompt
    ]


def test_an_empty_pin_from_any_source_is_refused_before_login(tmp_path: Path) -> None:
    for request, kind in _empty_requests(tmp_path):
        with pytest.raises(PinUnavailableError) as info:
            resolve_pin(request)
        assert "The PIN is empty" in info.value.message, kind
        assert kind.value in info.value.message
        assert info.value.exit_code == 5 and info.value.hint


def test_an_empty_environment_pin_does_not_fall_through_to_the_prompt() -> None:
    """An empty RAH_PKCS11_PIN is a mistake to report, not "no PIN given": asking on the
    terminal instead would hide it (and hang an unattended run until the prompt fails)."""
    with pytest.raises(PinUnavailableError, match="empty"):
        resolve_pin(PinRequest("PIN", environ={PIN_ENV_VAR: ""}, prompt=_no_prompt))


def test_a_pin_of_spaces_is_a_pin() -> None:
    assert resolve_pin(PinRequest("PIN", pin_value=" "))[0] == " "


# -- pin-source values are quoted through redact() ---------------------------------------------


@pytest.mark.parametrize("source", ["4815162342", "env:4815162342",
                                    "4815162342 file:/x"])
def test_a_pin_typed_where_the_pin_source_goes_is_not_shown(source: str) -> None:
    with pytest.raises(PinUnavailableError) as info:
        read_pin_source(source, {})
    assert "4815162342" not in info.value.diagnostics()
    assert "4815162342" not in str(info.value)


# -- PIN file permissions ----------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "warned"), [(0o600, False), (0o400, False), (0o620, False), (0o640, True),
                                              (0o604, True), (0o644, True)])
def test_a_pin_file_readable_by_others_gets_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, warned: bool
) -> None:
    path = tmp_path / "pin"
    path.write_text("4815\n")
    path.chmod(mode)
    with caplog.at_level("WARNING", logger="rolesanywhere_hsm.pin"):
        assert read_pin_source(f"file:{path}") == "4815"  # a warning, not a refusal
    text = caplog.text
    assert ("chmod 600" in text) is warned
    assert "4815" not in text
    if warned:
        assert f"{mode:04o}" in text and str(path) in text


# -- the terminal is restored when the process is stopped at the prompt ------------------------


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGHUP"])
def test_terminal_echo_is_restored_when_stopped_at_the_prompt(signum: str) -> None:
    import signal
    import termios

    child, master, slave = _start_prompt_on_pty()
    try:
        # The prompt was written after echo was switched off.
        assert not termios.tcgetattr(slave)[3] & termios.ECHO
        child.send_signal(getattr(signal, signum))
        child.communicate(timeout=20)
        # The signal still ends the process as it would have (no handler of ours is left)...
        assert child.returncode == -getattr(signal, signum)
        # ...and the terminal has its echo back.
        assert termios.tcgetattr(slave)[3] & termios.ECHO
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(master)
        os.close(slave)


def test_request_repr_hides_a_pin_typed_as_pin_source() -> None:
    assert "48151623" not in repr(PinRequest("PIN", pin_source="48151623"))
    assert "env:TOKEN_PIN" in repr(PinRequest("PIN", pin_source="env:TOKEN_PIN"))
