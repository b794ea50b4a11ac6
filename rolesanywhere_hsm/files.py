"""Files in and out: read only regular files of a bounded size; write atomically, owner-only.

Reading: every file we are given (certificate, key, intermediates, CA bundle, PIN file, emulator
config and TLS files) goes through `read_regular_file()`. A FIFO would block the run forever,
`/dev/zero` would fill the memory, a directory gives a confusing error deep inside a parser: each
is refused at once with one line that names the file and what it is instead.

Writing: a reader (an SDK, a watcher polling for a port file) sees the old file or the new one,
never a half-written one; a secret is never readable by others, not even for a moment.
"""

from __future__ import annotations

import os
import selectors
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rolesanywhere_hsm.errors import RolesAnywhereError, UsageError
from rolesanywhere_hsm.redact import redact

__all__ = [
    "CA_BUNDLE_LIMIT",
    "CERTIFICATE_LIMIT",
    "CONFIG_LIMIT",
    "KEY_LIMIT",
    "PIN_FILE_LIMIT",
    "CappedOutput",
    "read_regular_file",
    "run_capped",
    "write_atomic",
]

MiB = 1024 * 1024
# Caps per kind: far above any real file of the kind, far below what hurts.
CERTIFICATE_LIMIT = 4 * MiB  # a certificate, a chain of intermediates, a PKCS#12 bundle
KEY_LIMIT = 4 * MiB
CA_BUNDLE_LIMIT = 16 * MiB  # the system bundles are a few hundred KiB
CONFIG_LIMIT = 4 * MiB
PIN_FILE_LIMIT = 1024

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_regular_file(
    path: str | os.PathLike[str],
    *,
    what: str,
    limit: int,
    error: type[RolesAnywhereError] = UsageError,
) -> bytes:
    """The bytes of `path`, which must be a regular file of at most `limit` bytes.

    `what` names the file in messages ("certificate", "PIN"); `error` is the exception class
    (and so the exit code) that fits the caller. The file is opened non-blocking (a FIFO
    without a writer opens at once) and checked with fstat before a byte is read, and at most
    `limit + 1` bytes are ever read, so a file that grows meanwhile is caught too.
    """
    shown = redact(os.fsdecode(path))
    hint = "Give the path of a regular file."

    def fail(reason: str, hint: str = hint) -> RolesAnywhereError:
        return error(f"Cannot read the {what} file {shown}: {reason}.", hint=hint)

    try:
        before = os.stat(path)
        if not stat.S_ISREG(before.st_mode):  # refused without even opening it (a tape, a tty)
            raise fail(f"it is {_kind(before.st_mode)}, not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except ValueError:  # an embedded NUL
        raise fail("the path contains a NUL character", "Check how the path was written.") from None
    except OSError as exc:
        raise fail(exc.strerror or type(exc).__name__, "Check the path and its permissions.") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # replaced between stat and open
            raise fail(f"it is {_kind(info.st_mode)}, not a regular file")
        if info.st_size > limit:
            raise fail(f"it is larger than {_size(limit)}", "Check that this is the right file.")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise fail(f"it is larger than {_size(limit)}", "Check that this is the right file.")
        return b"".join(chunks)
    except OSError as exc:
        raise fail(exc.strerror or type(exc).__name__, "Check the path and its permissions.") from None
    finally:
        os.close(fd)


@dataclass(frozen=True)
class CappedOutput:
    """What `run_capped` got: the exit status (None when the program was stopped) and stdout."""

    returncode: int | None
    stdout: bytes
    over_limit: bool = False


def run_capped(argv: list[str], *, limit: int, timeout: float) -> CappedOutput:
    """Run `argv` (no shell, no stdin, stderr dropped) and read at most `limit` bytes of its stdout.

    A program that prints more is stopped at once (`over_limit`), one that runs longer than
    `timeout` seconds is stopped and `subprocess.TimeoutExpired` raised: neither its output nor
    its running time can grow without bound. OSError (not found, not executable) passes through.
    """
    give_up = time.monotonic() + timeout
    process = subprocess.Popen(  # noqa: S603 (argv, no shell)
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert process.stdout is not None
    fd = process.stdout.fileno()
    data = bytearray()
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                left = give_up - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired(argv, timeout)
                if not selector.select(left):
                    continue
                chunk = os.read(fd, limit + 1 - len(data))
                if not chunk:
                    break
                data += chunk
                if len(data) > limit:
                    return CappedOutput(None, b"", over_limit=True)
        try:
            returncode = process.wait(max(0.0, give_up - time.monotonic()))
        except subprocess.TimeoutExpired:  # closed its stdout but kept running
            raise subprocess.TimeoutExpired(argv, timeout) from None
        return CappedOutput(returncode, bytes(data))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


def _size(limit: int) -> str:
    if limit >= MiB and limit % MiB == 0:
        return f"{limit // MiB} MiB"
    if limit >= 1024 and limit % 1024 == 0:
        return f"{limit // 1024} KiB"
    return f"{limit} bytes"


def write_atomic(path: str | Path, text: str, mode: int = 0o600) -> Path:
    """Replace `path` with `text` in one rename, the new file created with `mode`."""
    path = Path(path).absolute()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w") as handle:
            if mode != 0o600:
                os.fchmod(handle.fileno(), mode)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
