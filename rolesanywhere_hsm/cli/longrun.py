"""The life of a long-running command (`serve`, `update`, `emulator`), in one place: stderr
logging, signals, and the service manager's notifications.

- **Logging**: one stderr handler, through the redaction filter (no pin-value or URL password
  in a log line), on the command's loggers, removed when the command ends (an in-process
  caller's stderr may be closed by then). `--debug` has already set up a handler for everything.
- **Signals**, handled from the start (also while the token is opened and the first credentials
  fetched) to the end:
  - SIGTERM, SIGINT: stop. The command finishes what is in progress (bounded) and exits 0.
    A second one while stopping is logged and changes nothing: the shutdown is bounded, it
    still ends in exit 0 (never a half-finished logout with exit 130). Before the command is
    ready (opening the token, a PIN prompt, the first fetch) SIGTERM waits for that bounded
    step to end, while SIGINT interrupts it as in any command (exit 130): the person at the
    terminal may be looking at a PIN prompt they do not mean to answer.
  - SIGHUP: logged, and the command keeps running. Nothing is reloaded: options are read once
    at start, and the files that may change under a running process (a `pin-source` file) are
    read again whenever they are needed anyway. (A log rotator's HUP must not kill a server.)
  - SIGUSR1: one log line with the command's state (for serve and update: the credentials'
    expiry, the next refresh, the last error).
  The kernel may hand a signal to any thread (the emulator's server threads, serve's refresh
  thread), and then a main thread blocked in a wait is not interrupted: Python would run the
  handler only once that wait ended by itself. So a wake-up pipe (`signal.set_wakeup_fd`)
  receives a byte for every signal, and `wait()` (or serve's event loop, through
  `wakeup_fd`) watches it: the handler runs at once, whichever thread took the signal.
- **sd_notify** (rolesanywhere_hsm/sdnotify.py; a no-op outside a service manager):
  `READY=1` when the command says so (serve and update: once the first credentials are held),
  `STOPPING=1` as soon as a stop is asked for, and `WATCHDOG=1` every half `WATCHDOG_USEC`
  (systemd's `WatchdogSec=`) for the life of the command.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import TYPE_CHECKING

from rolesanywhere_hsm import sdnotify

if TYPE_CHECKING:
    from rolesanywhere_hsm.refresh import RefreshingCredentials

__all__ = ["LongRunning", "log_to_stderr", "refresh_state"]

log = logging.getLogger("rolesanywhere_hsm.longrun")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
HANDLED_SIGNALS = (*STOP_SIGNALS, signal.SIGHUP, signal.SIGUSR1)


def log_to_stderr(prefix: str, names: Iterable[str], *, propagate: bool = True) -> logging.Handler:
    """One stderr handler, `prefix` before each message, through the redaction filter, on the
    loggers `names` at INFO. Returns it, for `remove_handler`."""
    from rolesanywhere_hsm.redact import RedactingFilter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prefix}%(message)s"))
    handler.addFilter(RedactingFilter())
    for name in names:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        if not propagate:
            logger.propagate = False
    return handler


def remove_handler(handler: logging.Handler, names: Iterable[str]) -> None:
    for name in names:
        logging.getLogger(name).removeHandler(handler)


def refresh_state(engine: RefreshingCredentials | None) -> str:
    """One line on a refresh engine, for SIGUSR1: no secret, only times, counts and the last
    error's message (our errors' messages carry no secrets)."""
    from rolesanywhere_hsm.credentials import format_expiration
    from rolesanywhere_hsm.refresh import _describe

    if engine is None:
        return "no credentials yet (opening the token or fetching the first ones)"
    times = engine.refresh_times()  # a snapshot: never fetches, never takes the engine's lock
    parts = []
    if times is None:
        parts.append("no credentials held")
    else:
        parts.append(f"credentials usable until {format_expiration(times.usable_until)}")
        parts.append(f"next refresh at {format_expiration(times.advisory)}")
    parts.append(f"{engine.refresh_count} fetched")
    if engine.fatal_error is not None:
        parts.append(f"refreshing stopped: {_describe(engine.fatal_error)}")
    elif engine.last_error is not None:
        parts.append(f"last refresh failed: {_describe(engine.last_error)}")
    return "; ".join(parts)


class LongRunning:
    """The signals, log handler and notifications of one long-running command; a context
    manager around the whole command (enter it before the first slow step).

    `stop` is set on the first SIGTERM/SIGINT; `on_stop` callbacks run then too (in the main
    thread, from the signal handler: keep them to waking a loop). `state` gives the SIGUSR1
    line. `loggers` get the stderr handler unless `debug` (the debug handler already logs all).
    """

    def __init__(self, command: str, *, prefix: str, loggers: Iterable[str], debug: bool = False,
                 propagate: bool = True, state: Callable[[], str] | None = None) -> None:
        self.command = command
        self.stop = threading.Event()
        self.state = state
        self._prefix = prefix
        self._loggers = (*loggers, log.name, sdnotify.log.name)
        self._debug = debug
        self._propagate = propagate
        self._callbacks: list[Callable[[], None]] = []
        self._handler: logging.Handler | None = None
        self._saved: dict[int, object] = {}
        self._closed = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._stopping_sent = False
        self._pipe: tuple[int, int] | None = None
        self._old_wakeup = -1
        self.ready_sent = False

    # -- the command's side ------------------------------------------------------------------

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call `callback` when a stop is asked for (at once if it already was)."""
        self._callbacks.append(callback)
        if self.stop.is_set():
            callback()

    def ready(self, status: str) -> None:
        """Tell the service manager the command is ready (once; later calls only update STATUS)."""
        message = f"STATUS={status}" if self.ready_sent else f"READY=1\nSTATUS={status}"
        self.ready_sent = True
        sdnotify.notify(message)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds for a stop; True if one was asked for. Watches the
        wake-up pipe, so that a signal taken by another thread still ends the wait at once."""
        if self._pipe is None:
            return self.stop.wait(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.stop.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            select.select([self._pipe[0]], [], [], left)  # the handlers run when it returns
            self.drain()
        return True

    @property
    def wakeup_fd(self) -> int | None:
        """Readable after each signal: an event loop watches it (and calls `drain`) so that
        the signal's handler runs at once."""
        return self._pipe[0] if self._pipe else None

    def drain(self) -> None:
        if self._pipe is not None:
            try:
                while os.read(self._pipe[0], 512):
                    pass
            except BlockingIOError:
                pass

    # -- life --------------------------------------------------------------------------------

    def __enter__(self) -> LongRunning:
        if not self._debug:
            self._handler = log_to_stderr(self._prefix, self._loggers, propagate=self._propagate)
        for signum in HANDLED_SIGNALS:
            self._saved[signum] = signal.signal(signum, self._on_signal)
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        self._pipe = (read, write)
        self._old_wakeup = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        interval = sdnotify.watchdog_interval()
        if interval is not None:
            self._watchdog = threading.Thread(target=self._ping, args=(interval,),
                                              name="rah-watchdog", daemon=True)
            self._watchdog.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._send_stopping()
        self._closed.set()
        if self._watchdog is not None:
            self._watchdog.join(2.0)
        for signum, previous in self._saved.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        self._saved.clear()
        if self._pipe is not None:
            signal.set_wakeup_fd(self._old_wakeup)
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None
        if self._handler is not None:
            remove_handler(self._handler, self._loggers)
            self._handler = None

    def request_stop(self, reason: str) -> None:
        """Ask the command to stop, as SIGTERM does (also for tests and in-process callers)."""
        if self.stop.is_set():
            log.info("%s while stopping: already stopping", reason)
            return
        log.info("%s: stopping", reason)
        self._send_stopping()
        self.stop.set()
        if self._pipe is not None:  # a caller in another thread: wake `wait()`
            try:
                os.write(self._pipe[1], b"\0")
            except BlockingIOError:
                pass
        for callback in self._callbacks:
            callback()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and not self.ready_sent and not self.stop.is_set():
            raise KeyboardInterrupt
        if signum in STOP_SIGNALS:
            self.request_stop(name)
        elif signum == signal.SIGHUP:
            log.info("SIGHUP: nothing to reload, still running (options are read at start: "
                     "restart to change them)")
        elif signum == signal.SIGUSR1:
            state = self.state() if self.state is not None else "running"
            log.info("%s: %s", "stopping" if self.stop.is_set() else "running", state)

    def _send_stopping(self) -> None:
        if not self._stopping_sent:
            self._stopping_sent = True
            sdnotify.notify("STOPPING=1")

    def _ping(self, interval: float) -> None:
        while not self._closed.wait(interval):
            sdnotify.notify("WATCHDOG=1")
