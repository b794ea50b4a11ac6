"""Starting, waiting for and stopping the helper daemons of the token fixtures.

Every wait is bounded and every process we start is stopped by its own pid, so a failing
fixture neither hangs the test run nor leaves daemons behind.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = [
    "CommandFailed",
    "die_with_parent",
    "missing_binaries",
    "pid_alive",
    "run",
    "stop_pid",
    "stop_process",
    "wait_until",
]


class CommandFailed(RuntimeError):
    """A setup command exited non-zero; the message carries its output so CI logs show why."""


def die_with_parent() -> None:
    """preexec_fn for our daemons: SIGTERM them when the test process dies, even by SIGKILL.

    Teardown stops them in order; this is the net for a killed pytest, which would otherwise
    leave a pcscd or a card process holding /run/pcscd or port 35963 for the next run.
    """
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def missing_binaries(*names: str) -> list[str]:
    """Names (commands or absolute paths) that are not installed, for a clean pytest.skip."""
    missing = []
    for name in names:
        if os.path.isabs(name):
            if not os.path.exists(name):
                missing.append(name)
        elif shutil.which(name) is None:
            missing.append(name)
    return missing


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a setup command with a timeout; `env` is added to (not substituted for) ours."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [str(c) for c in cmd],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise CommandFailed(
            f"{' '.join(str(c) for c in cmd)} exited {proc.returncode}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.01) -> None:
    """Poll `predicate` until true; raise TimeoutError naming `what` when time is up."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a reaped child must not count as alive)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state field follows the parenthesised command name, which may contain spaces.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_pid(pid: int, *, timeout: float = 5.0) -> None:
    """SIGTERM a daemon we started (it is not our child after --daemon), SIGKILL if it lingers."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        wait_until(lambda: not pid_alive(pid), timeout=timeout, what=f"pid {pid} to exit")
    except TimeoutError:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        wait_until(lambda: not pid_alive(pid), timeout=timeout, what=f"pid {pid} to die")


def stop_process(proc: subprocess.Popen[bytes] | subprocess.Popen[str], *, timeout: float = 5.0) -> None:
    """Terminate a child we started, then reap it so no zombie is left."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
