"""Where a secret can come from: a `pin-source`, and the terminal prompt.

We run as a `credential_process` child of an AWS SDK, which owns our stdout (the credentials
JSON) and usually our stderr, so a secret is never asked for there: only on the controlling
terminal (`/dev/tty`), and when there is none we fail at once instead of hanging the SDK.

The order in which sources are tried, for a token PIN and for the key passwords alike, is
`SecretPolicy`'s (signers/secretpolicy.py; docs/pkcs11.md, "PIN sources, in order"); this
module reads the sources it names: `pin-source` in a `pkcs11:` URI (`file:/path`,
`file:///path` or a plain absolute path, RFC 7512, and our documented extras `env:NAME` and
`cmd:program args...`, run without a shell, the first line of its stdout being the PIN), and
the prompt on `/dev/tty` with echo off.

A PIN is returned to the caller and never stored here; messages name the source, never the
value (a `pin-source` is quoted through `redact()`: a PIN typed where the source goes is
hidden). A PIN file readable by group or others gets a warning (see `check_pin_file_mode`).
The prompt restores the terminal when the process is told to stop (SIGTERM, SIGHUP) while
echo is off.
"""

from __future__ import annotations

import contextlib
import enum
import os
import stat
import threading
from collections.abc import Iterator, Mapping
from urllib.parse import unquote, urlsplit

from rolesanywhere_hsm.errors import PinUnavailableError
from rolesanywhere_hsm.lazylog import get_logger
from rolesanywhere_hsm.redact import redact

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from pathlib import Path
# pathlib, shlex, signal and subprocess are imported where a PIN file, a command or the prompt
# needs them: a PIN from the environment (a cold `credential-process`) needs none of them.

log = get_logger("rolesanywhere_hsm.pin")  # logging only when a line can show

__all__ = [
    "PIN_ENV_VAR",
    "PinSourceKind",
    "ProtectedAuthentication",
    "check_pin_file_mode",
    "prompt_on_tty",
    "read_pin_source",
]

PIN_ENV_VAR = "RAH_PKCS11_PIN"
TTY_PATH = "/dev/tty"
# A `cmd:` PIN source may itself prompt (pinentry, a password manager unlocking): give it time,
# but never hang the SDK for ever.
PIN_COMMAND_TIMEOUT = 120.0


def prompt_on_tty(description: str, *, fix: str | None = None) -> str:
    """Ask for a secret on the controlling terminal with echo off; return what was typed.

    `description` is shown as the prompt ("PIN for token 'ci'"). stdout and stderr are never
    used: they belong to the program that runs us. Raises `PinUnavailableError` at once when
    there is no controlling terminal (a service, a CI job, `setsid`), so a missing PIN fails
    fast instead of blocking; `fix` is that error's hint when the caller knows the exact
    option (a key file's password), instead of the general one.
    """
    try:
        fd = os.open(TTY_PATH, os.O_RDWR | os.O_NOCTTY)
    except OSError as exc:
        raise PinUnavailableError(
            f"A secret is needed ({description}) but there is no terminal to ask on "
            f"({TTY_PATH}: {exc.strerror or exc}).",
            hint=fix or f"Give it non-interactively: for a token PIN, pin-source=file:/path in "
            f"the pkcs11: URI or the {PIN_ENV_VAR} environment variable; for a key file, "
            "--pkcs8-password / RAH_PKCS8_PASSWORD, for a TPM key file --tpm-key-password / "
            "RAH_TPM_KEY_PASSWORD.",
        ) from None
    stopped: list[int] = []
    with open(fd, "r+b", buffering=0) as tty, _stop_signals_raise(stopped):
        try:
            line = _prompt_with_echo_off(fd, tty, description)
        except _Stopped:  # the terminal was restored on the way out
            line = None
    if stopped:
        # The terminal is back as it was: now let the signal do what it would have done
        # (end the process, or run the handler that was there before us).
        import signal

        signal.raise_signal(stopped[0])
        raise PinUnavailableError(f"The prompt was interrupted ({description}).",
                                  hint="Run again and type the PIN.")
    if line is None:
        raise PinUnavailableError(
            f"No secret was entered ({description}): the terminal closed.",
            hint="Type the PIN at the prompt, or give it with pin-source or "
            f"{PIN_ENV_VAR}.",
        )
    return line


def _prompt_with_echo_off(fd: int, tty, description: str) -> str | None:  # type: ignore[no-untyped-def]
    import termios

    try:
        old = termios.tcgetattr(fd)
    except termios.error:
        old = None  # not a real terminal (should not happen for /dev/tty): read anyway
    try:
        if old is not None:
            new = list(old)
            new[3] &= ~termios.ECHO  # lflag: no echo, keep ICANON so the line is edited
            termios.tcsetattr(fd, termios.TCSAFLUSH, new)
        tty.write(f"{description}: ".encode())
        return _read_line(tty)
    finally:
        # A second stop signal while this runs is ignored by the handler (it raises once).
        # After a hang-up the terminal may be gone: nothing left to restore, not an error.
        with contextlib.suppress(OSError, termios.error):
            if old is not None:
                termios.tcsetattr(fd, termios.TCSAFLUSH, old)
            tty.write(b"\n")


class _Stopped(BaseException):
    """Raised from a SIGTERM/SIGHUP handler to leave the blocking tty read (PEP 475 retries a
    read interrupted by a handler that returns; one that raises ends it)."""


@contextlib.contextmanager
def _stop_signals_raise(stopped: list[int]) -> Iterator[None]:
    """While prompting, SIGTERM and SIGHUP raise `_Stopped` (recording the signal in
    `stopped`) so that the `finally` that restores echo runs; the previous handlers come back
    afterwards. Only the main thread can set handlers: elsewhere the prompt runs without."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    import signal

    def handler(signum: int, frame: object) -> None:
        if not stopped:
            stopped.append(signum)
            raise _Stopped

    # A signal the process ignores (nohup) stays ignored.
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)
                if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


def _read_line(tty) -> str | None:  # type: ignore[no-untyped-def]
    """One line from an unbuffered tty, without the newline; None at end of file."""
    chunks = bytearray()
    while True:
        byte = tty.read(1)
        if not byte:
            return chunks.decode("utf-8", "replace") if chunks else None
        if byte in (b"\n", b"\r"):
            return chunks.decode("utf-8", "replace")
        chunks += byte


class PinSourceKind(enum.Enum):
    """Where a PIN came from; used in messages ("the PIN from RAH_PKCS11_PIN was refused")."""

    URI_PIN_VALUE = "pin-value in the URI"
    URI_PIN_SOURCE = "pin-source in the URI"
    ENVIRONMENT = f"the {PIN_ENV_VAR} environment variable"
    PROTECTED_PATH = "the token's protected authentication path (PIN pad)"
    CALLBACK = "the caller's secret callback"
    PROMPT = "the terminal prompt"


class _ProtectedAuthentication:
    """Sentinel: log in through the token's own PIN pad, with no PIN from us."""

    _instance: _ProtectedAuthentication | None = None

    def __new__(cls) -> _ProtectedAuthentication:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ProtectedAuthentication"


ProtectedAuthentication = _ProtectedAuthentication()


def read_pin_source(source: str, environ: Mapping[str, str] | None = None) -> str:
    """The PIN that a `pin-source` value designates.

    RFC 7512 defines `pin-source` as a URI, in practice `file:` or an absolute path; the first
    line of the file is the PIN. We add `env:NAME` (the variable's value) and `cmd:...` (the
    first stdout line of a command run without a shell, split with shlex) because secret
    managers hand out secrets that way. Errors name the source, never its content.
    """
    environ = os.environ if environ is None else environ
    if source.startswith("env:"):
        name = source[4:]
        if not name:
            raise PinUnavailableError("pin-source=env: names no environment variable.",
                                      hint="Write pin-source=env:VARIABLE_NAME.")
        value = environ.get(name)
        if value is None:
            shown = _shown_source(source)
            shown = shown[4:] if shown.startswith("env:") else shown
            raise PinUnavailableError(
                f"pin-source names the environment variable {shown}, which is not set.",
                hint="Export it with the PIN, or choose another pin-source.",
            )
        return value
    if source.startswith("cmd:"):
        return _pin_from_command(source[4:])
    path = _pin_source_path(source)
    check_pin_file_mode(path)
    return _pin_from_file(path)


def _shown_source(source: str) -> str:
    """A pin-source value as a message may quote it (`redact()`'s rule: a PIN typed where the
    source goes is hidden, a command shows its name only)."""
    prefix = "pin-source="
    return redact(prefix + source)[len(prefix):]


def check_pin_file_mode(path: Path) -> None:
    """Warn (on the `rolesanywhere_hsm.pin` logger, shown on stderr) when a PIN file can be
    read by its group or by others.

    A warning, not a refusal: a PIN file shared with a service group (mode 0640) is a
    deliberate setup on many hosts, and refusing would turn every `aws` call on the host into
    an outage after an upgrade, in an unattended process whose stderr few people read; the
    PIN alone does not give the key (the token must be present too). The warning names the
    file and the fix; docs/security.md says why. A file we cannot stat is left to the reader
    to report."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # ValueError: a NUL in the path, which the reader reports
        return
    if stat.S_ISREG(mode) and mode & (stat.S_IRGRP | stat.S_IROTH):
        who = " and ".join(w for w, bit in (("its group", stat.S_IRGRP), ("others", stat.S_IROTH))
                           if mode & bit)
        log.warning("warning: the PIN file %s can be read by %s (mode %04o); run chmod 600 on it.",
                    redact(str(path)), who, stat.S_IMODE(mode))


def _pin_source_path(source: str) -> Path:
    from pathlib import Path

    if source.startswith("file:"):
        parts = urlsplit(source)
        if parts.netloc not in ("", "localhost"):
            raise PinUnavailableError(
                f"pin-source={_shown_source(source)} names a file on another host.",
                hint="Use a local file: pin-source=file:/path/to/pin.",
            )
        return Path(unquote(parts.path))
    if source.startswith("/"):
        return Path(source)
    raise PinUnavailableError(
        f"pin-source={_shown_source(source)} is not understood (not shown unless it is a "
        "known form: it may be a PIN typed in the wrong place).",
        hint="Use file:/path, an absolute path, env:NAME or cmd:program args.",
    )


def _pin_from_file(path: Path) -> str:
    from rolesanywhere_hsm.files import PIN_FILE_LIMIT, read_regular_file

    data = read_regular_file(path, what="PIN", limit=PIN_FILE_LIMIT, error=PinUnavailableError)
    text = data.decode("utf-8", "replace")
    return text.splitlines()[0] if text else ""


def _pin_from_command(command: str) -> str:
    import shlex
    import subprocess

    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise PinUnavailableError(f"pin-source=cmd: cannot be split into words ({exc}).",
                                  hint="Check the quoting of the command.") from None
    if not argv:
        raise PinUnavailableError("pin-source=cmd: names no command.",
                                  hint="Write pin-source=cmd:program args.")
    from rolesanywhere_hsm.files import PIN_FILE_LIMIT, run_capped

    try:
        done = run_capped(argv, limit=PIN_FILE_LIMIT, timeout=PIN_COMMAND_TIMEOUT)
    except FileNotFoundError:
        raise PinUnavailableError(f"The PIN command {argv[0]!r} was not found.",
                                  hint="Give the full path of the program in pin-source=cmd:.") from None
    except subprocess.TimeoutExpired:
        raise PinUnavailableError(
            f"The PIN command {argv[0]!r} did not finish within {PIN_COMMAND_TIMEOUT:.0f} s.",
            hint="Check that it does not wait for input it cannot get.",
        ) from None
    except OSError as exc:
        raise PinUnavailableError(f"The PIN command {argv[0]!r} cannot run: {exc.strerror or exc}.",
                                  hint="Check the program and its permissions.") from None
    if done.over_limit:
        raise PinUnavailableError(f"The PIN command {argv[0]!r} printed more than 1 KiB.",
                                  hint="It must print the PIN on its first line, and little else.")
    if done.returncode != 0:
        raise PinUnavailableError(
            f"The PIN command {argv[0]!r} failed with exit status {done.returncode}.",
            hint="Run it by hand to see why (its output is not shown: it may hold the PIN).",
        )
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    if not lines:
        raise PinUnavailableError(f"The PIN command {argv[0]!r} printed nothing.",
                                  hint="It must print the PIN on its first line.")
    return lines[0]
