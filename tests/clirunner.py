"""Running the `rolesanywhere-hsm` command line from a test: in-process by default, a real process
only where the process itself is under test.

    from tests.clirunner import run_cli, run_process

    done = run_cli("credential-process", "--certificate", cert, ..., env=softhsm_env)
    assert done.returncode == 0, done.stderr
    json.loads(done.stdout)

`run_cli(*args, env=None, input=None, cwd=None)` goes through `rolesanywhere_hsm.cli.main`,
the console script's own function, so exit codes, stdout and stderr are the ones a user sees
(errors rendered by the one catch site, usage errors by click via cli/usage.py); what a PKCS#11
module or C library writes to file descriptors 1 and 2 is captured too. It returns a
`subprocess.CompletedProcess` (`args`, `returncode`, `stdout`, `stderr`; text, or bytes with
`text=False`) so that a test can switch between the two runners without other changes.
What makes it faithful to a fresh process, and keeps runs from leaking into each other:
- `env` replaces `os.environ` for the run (None: the test's environment as it is) and the old
  one comes back afterwards, like a child's environment; `cwd` likewise;
- stdin is `input` (or empty), and there is no controlling terminal (`/dev/tty` cannot be
  opened, as under `setsid`): a PIN prompt fails at once instead of asking the developer;
- PKCS#11 modules that no open signer of the test holds are C_Finalized before and after the run
  (python-pkcs11 caches one library per path, and modules read SOFTHSM2_CONF / TPM2_PKCS11_*
  only at C_Initialize: a fresh process would read the run's environment);
- the typer app's click command is built once per test process, as a process builds it once
  (a build costs about 0.1 s of CPU time); click keeps each run's state in its Context;
- logging starts bare (no handlers, root at WARNING: `--debug`'s basicConfig takes effect) and
  is restored afterwards, with the signal handlers. `main(argv)` runs with `own_process` off
  (credential-process's fast path then imports as a library would; start-up import tests need
  a real process).
Tests that use it get no marker (they stay in the fast tier; token markers come from the token
fixtures they use).

`run_process(*args, env=None, input=None, timeout=90, cwd=ROOT, text=True)` runs
`python -m rolesanywhere_hsm ARGS` for real, for tests about the process: signals, start-up
imports, a tty or stdin, the console script's own exit, PIN lockout across processes. A test
that calls it (directly or through a helper of its own) gets the `process` marker
automatically (tests/markers.py).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["ROOT", "run_cli", "run_process", "typer_command_kept"]

ROOT = Path(__file__).resolve().parents[1]
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_NO_TTY = "/nonexistent/rolesanywhere-hsm-tests/no-controlling-terminal"


def run_cli(*args: str | os.PathLike[str], env: Mapping[str, str] | None = None,
            input: str | bytes | None = None, cwd: str | os.PathLike[str] | None = None,
            text: bool = True) -> subprocess.CompletedProcess[Any]:
    """The command line, in this process: see the module docstring."""
    from rolesanywhere_hsm.cli import main

    argv = [os.fsdecode(arg) for arg in args]  # bytes as sys.argv holds them (surrogateescape)
    stdin_bytes = input.encode() if isinstance(input, str) else (input or b"")
    stdout, stderr = io.BytesIO(), io.BytesIO()
    with _isolated(env, cwd), typer_command_kept(), _fd_captured(1) as fd_out, _fd_captured(2) as fd_err:
        out = io.TextIOWrapper(stdout, encoding="utf-8", errors="replace", write_through=True)
        err = io.TextIOWrapper(stderr, encoding="utf-8", errors="replace", write_through=True)
        inp = io.TextIOWrapper(io.BytesIO(stdin_bytes), encoding="utf-8")
        saved = sys.stdin, sys.stdout, sys.stderr
        sys.stdin, sys.stdout, sys.stderr = inp, out, err
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = _exit_status(exc.code, err)
        finally:
            out.flush()
            err.flush()
            sys.stdin, sys.stdout, sys.stderr = saved
    # What a module or a C library wrote to the file descriptors themselves comes after.
    result_out: Any = stdout.getvalue() + fd_out.read()
    result_err: Any = stderr.getvalue() + fd_err.read()
    if text:
        result_out, result_err = result_out.decode("utf-8", "replace"), result_err.decode("utf-8", "replace")
    return subprocess.CompletedProcess(["rolesanywhere-hsm", *argv], code, result_out, result_err)


_KEPT: dict[int, tuple[Any, Any]] = {}


@contextlib.contextmanager
def typer_command_kept() -> Iterator[None]:
    """Build the typer app's click command once per test process, not once per run: a build
    reads every command's signature and type hints (about 0.1 s, most of the CPU time of a
    `run_cli` in the fast tier). A process builds it once too, and click keeps a run's
    state in its Context, not in the command, so a kept command parses the way a new one
    would. Until typer is imported (the first non-fast command), runs build as usual."""
    typer_main = sys.modules.get("typer.main")
    build = getattr(typer_main, "get_command", None)
    if typer_main is None or build is None or getattr(build, "kept_by_clirunner", False):
        yield
        return

    def kept(app: Any) -> Any:
        entry = _KEPT.get(id(app))
        if entry is None or entry[0] is not app:
            entry = _KEPT[id(app)] = (app, build(app))
        return entry[1]

    kept.kept_by_clirunner = True  # type: ignore[attr-defined]
    typer_main.get_command = kept
    try:
        yield
    finally:
        typer_main.get_command = build


class _Captured:
    """Bytes written to a file descriptor during a run (read after the run only)."""

    def __init__(self) -> None:
        self.data = b""

    def read(self) -> bytes:
        return self.data


@contextlib.contextmanager
def _fd_captured(fd: int) -> Iterator[_Captured]:
    captured = _Captured()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(fd)
        os.dup2(sink.fileno(), fd)
        try:
            yield captured
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            captured.data = sink.read()


def run_process(*args: str | os.PathLike[str], env: Mapping[str, str] | None = None,
                input: str | bytes | None = None, timeout: float = 90,
                cwd: str | os.PathLike[str] | None = None,
                text: bool = True) -> subprocess.CompletedProcess[Any]:
    """`python -m rolesanywhere_hsm ARGS` as a real process (the `process` marker follows).
    The child imports this checkout (PYTHONPATH), whatever the environment given."""
    environment = dict(os.environ if env is None else env)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), environment.get("PYTHONPATH", "")]))
    if text and isinstance(input, bytes):
        input = input.decode()
    return subprocess.run([sys.executable, "-m", "rolesanywhere_hsm", *map(os.fspath, args)],
                          capture_output=True, text=text, env=environment, input=input,
                          timeout=timeout, cwd=cwd or ROOT, check=False)


def _exit_status(code: object, err: io.TextIOWrapper) -> int:
    """What the interpreter makes of SystemExit(code) at the top of a process."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=err)  # sys.exit("message"): printed to stderr, status 1
    return 1


@contextlib.contextmanager
def _isolated(env: Mapping[str, str] | None, cwd: str | os.PathLike[str] | None) -> Iterator[None]:
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    saved_signals = {signum: signal.getsignal(signum) for signum in _SIGNALS}
    saved_logging = _logging_state()
    for logger in _loggers().values():  # a new process starts with no handlers and levels
        logger.handlers.clear()
        logger.level = logging.NOTSET
    logging.getLogger().setLevel(logging.WARNING)  # and empties every logger's level cache
    from rolesanywhere_hsm.signers import pin

    saved_tty, pin.TTY_PATH = pin.TTY_PATH, _NO_TTY
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    _finalize_idle_modules()
    try:
        yield
    finally:
        _finalize_idle_modules()
        os.chdir(saved_cwd)
        if os.environ != saved_env:
            os.environ.clear()
            os.environ.update(saved_env)
        if threading.current_thread() is threading.main_thread():  # signal.signal's rule
            for signum, handler in saved_signals.items():
                if handler is not None and signal.getsignal(signum) is not handler:
                    signal.signal(signum, handler)
        _restore_logging(saved_logging)
        pin.TTY_PATH = saved_tty


def _finalize_idle_modules() -> None:
    """C_Finalize every PKCS#11 module this process has loaded that no open signer holds, so
    that the next C_Initialize reads the environment then current (as a new process would)."""
    pkcs11 = sys.modules.get("pkcs11")
    if pkcs11 is None:
        return
    from rolesanywhere_hsm.signers.pkcs11.modules import finalize_module, module_in_use

    for path in list(getattr(pkcs11, "_loaded", {})):
        if not module_in_use(path):
            finalize_module(path)


_LoggingState = dict[str, tuple[list[logging.Handler], int, bool, bool]]


def _loggers() -> dict[str, logging.Logger]:
    loggers: dict[str, logging.Logger] = {"": logging.getLogger()}
    for name, logger in logging.Logger.manager.loggerDict.items():
        if isinstance(logger, logging.Logger):
            loggers[name] = logger
    return loggers


def _logging_state() -> _LoggingState:
    return {name: (list(logger.handlers), logger.level, logger.propagate, logger.disabled)
            for name, logger in _loggers().items()}


def _restore_logging(state: _LoggingState) -> None:
    for name, logger in _loggers().items():
        handlers, level, propagate, disabled = state.get(name, ([], logging.NOTSET, True, False))
        for handler in logger.handlers:
            if handler not in handlers:
                with contextlib.suppress(Exception):
                    handler.close()
        logger.handlers[:] = handlers
        logger.level = level
        logger.propagate, logger.disabled = propagate, disabled
    # Logger.setLevel empties the level cache of every logger: once here, not once per logger
    # (per logger it was a quadratic cost, seconds over a test run).
    logging.getLogger().setLevel(state[""][1])
