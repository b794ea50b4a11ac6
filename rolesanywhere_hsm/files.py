"""Writing files so that nothing is lost and nothing leaks: atomically, owner-only by default.

A reader (an SDK, a watcher polling for a port file) sees the old file or the new one, never a
half-written one; a secret is never readable by others, not even for a moment.

Files that several programs edit (`~/.aws/credentials`: `update` runs, the AWS CLI's
`aws configure`, another `update` for another profile) are changed with `update_atomic`: read,
change and replace under an exclusive `flock` on a lock file beside them (`NAME.lock`, never
deleted: deleting a lock file lets two writers hold "the" lock at once), so concurrent
updaters serialise and none loses another's change.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rolesanywhere_hsm.errors import UsageError

__all__ = ["locked", "update_atomic", "write_atomic"]

LOCK_TIMEOUT = 30.0


def write_atomic(path: str | Path, text: str | bytes, mode: int = 0o600) -> Path:
    """Replace `path` with `text` in one rename, the new file created with `mode`.

    Text is written as UTF-8 with its line endings untouched; bytes as they are."""
    path = Path(path).absolute()
    data = text.encode("utf-8") if isinstance(text, str) else text
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            if mode != 0o600:
                os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)  # the rename itself survives a crash
    return path


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def locked(path: str | Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an exclusive lock on `path` + ".lock" (created 0600 if missing) for the block.

    Waits at most `timeout` seconds for another holder, then raises UsageError (a run must
    end in bounded time even when another program hangs with the lock)."""
    import fcntl

    lock_path = Path(f"{path}.lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise UsageError(f"Cannot create the lock file {lock_path}: {exc.strerror or exc}.",
                         hint="Check that the directory exists and is writable by you.") from None
    try:
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                raise UsageError(
                    f"Another program has held the lock {lock_path} for more than {timeout:.0f} s.",
                    hint="Find it with `fuser` and stop it, or wait and run again.",
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def update_atomic(
    path: str | Path,
    change: Callable[[bytes | None], bytes],
    *,
    mode: int = 0o600,
    timeout: float = LOCK_TIMEOUT,
    make_parents: bool = True,
) -> Path:
    """Read `path` (None if missing), let `change` compute the new content, write it
    atomically with `mode`, all under `locked(path)`. A symbolic link is followed: its target
    is updated, the link stays. Missing parent directories are created 0700."""
    target = Path(os.path.realpath(Path(path).expanduser()))
    if make_parents and not target.parent.is_dir():
        try:
            missing = [p for p in (target.parent, *target.parent.parents) if not p.is_dir()]
            for directory in reversed(missing):  # each one 0700 (mkdir's parents=True would not)
                directory.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"Cannot create the directory {target.parent}: {exc.strerror or exc}.") from None
    with locked(target, timeout):
        try:
            old: bytes | None = target.read_bytes()
        except FileNotFoundError:
            old = None
        except OSError as exc:
            raise UsageError(f"Cannot read {target}: {exc.strerror or exc}.",
                             hint="Check the file's permissions.") from None
        new = change(old)
        try:
            write_atomic(target, new, mode)
        except OSError as exc:
            raise UsageError(f"Cannot write {target}: {exc.strerror or exc}.",
                             hint="Check that the directory is writable by you.") from None
    return target
