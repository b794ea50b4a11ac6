"""Files in and out: read only regular files of a bounded size; write atomically, owner-only.

Reading: every file we are given (certificate, key, intermediates, CA bundle, PIN file, emulator
config and TLS files) goes through `read_regular_file()`. A FIFO would block the run forever,
`/dev/zero` would fill the memory, a directory gives a confusing error deep inside a parser: each
is refused at once with one line that names the file and what it is instead.

Writing: a reader (an SDK, a watcher polling for a port file) sees the old file or the new one,
never a half-written one; a secret is never readable by others, not even for a moment.

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
import stat
import time
from collections.abc import Callable, Iterator

from rolesanywhere_hsm.errors import RolesAnywhereError, UsageError
from rolesanywhere_hsm.record import Record
from rolesanywhere_hsm.redact import redact

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    import subprocess
    from pathlib import Path
# pathlib, subprocess (with selectors) and tempfile are imported by the functions that use
# them: a cold `credential-process` reads its CA bundle here and needs none of them.

__all__ = [
    "CA_BUNDLE_LIMIT",
    "CERTIFICATE_LIMIT",
    "CONFIG_LIMIT",
    "KEY_LIMIT",
    "PIN_FILE_LIMIT",
    "CappedOutput",
    "read_regular_file",
    "locked",
    "resolve_link_safely",
    "run_capped",
    "update_atomic",
    "write_atomic",
]

FILE_CODE = "RAH-FILE-001"  # a file or directory we must read or write cannot be (docs/errors.md)
LOCK_CODE = "RAH-FILE-002"  # another program holds our lock file
PLANTED_LINK_CODE = "RAH-FILE-003"  # a symbolic link another user made in a shared directory

LOCK_TIMEOUT = 30.0

MiB = 1024 * 1024
# Caps per kind: far above any real file of the kind, far below what hurts.
CERTIFICATE_LIMIT = 4 * MiB  # a certificate, a chain of intermediates, a PKCS#12 bundle
KEY_LIMIT = 4 * MiB
CA_BUNDLE_LIMIT = 16 * MiB  # the system bundles are a few hundred KiB
CONFIG_LIMIT = 4 * MiB
PIN_FILE_LIMIT = 1024
UPDATE_LIMIT = 4 * MiB  # a file update_atomic changes (shared credentials, config): KiBs in real life

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
        return _read_open(fd, limit, fail)[0]
    finally:
        os.close(fd)


def _read_open(fd: int, limit: int,
               fail: Callable[..., RolesAnywhereError]) -> tuple[bytes, os.stat_result]:
    """The bytes of the open file `fd` and its fstat, refused unless it is a regular file of
    at most `limit` bytes; at most `limit + 1` bytes are read (a file that grows is caught)."""
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
        return b"".join(chunks), info
    except OSError as exc:
        raise fail(exc.strerror or type(exc).__name__, "Check the path and its permissions.") from None


class CappedOutput(Record):
    """What `run_capped` got: the exit status (None when the program was stopped) and stdout."""

    __slots__ = ("returncode", "stdout", "over_limit")
    _compared = __slots__
    returncode: int | None
    stdout: bytes
    over_limit: bool

    def __init__(self, returncode: int | None, stdout: bytes, over_limit: bool = False) -> None:
        self._set(returncode=returncode, stdout=stdout, over_limit=over_limit)


def run_capped(argv: list[str], *, limit: int, timeout: float) -> CappedOutput:
    """Run `argv` (no shell, no stdin, stderr dropped) and read at most `limit` bytes of its stdout.

    A program that prints more is stopped at once (`over_limit`), one that runs longer than
    `timeout` seconds is stopped and `subprocess.TimeoutExpired` raised: neither its output nor
    its running time can grow without bound. OSError (not found, not executable) passes through.
    """
    import selectors
    import subprocess

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


def write_atomic(path: str | Path, text: str | bytes, mode: int = 0o600,
                 owner: tuple[int, int] | None = None) -> Path:
    """Replace `path` with `text` in one rename, the new file created with `mode`.

    Text is written as UTF-8 with its line endings untouched; bytes as they are. `owner`
    (uid, gid) is given to the new file before a byte is written, when we may (root keeps a
    user's file the user's; anyone else keeps a group they are in), so that replacing a file
    does not change who owns it."""
    import tempfile
    from pathlib import Path

    path = Path(path).absolute()
    data = text.encode("utf-8") if isinstance(text, str) else text
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            if owner is not None and owner != (os.geteuid(), os.getegid()):
                with contextlib.suppress(PermissionError):  # not ours to give: the file becomes ours
                    os.fchown(handle.fileno(), *owner)
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


# The names tempfile.mkstemp gives write_atomic's temporary files: `.NAME.` and 8 of these.
_TEMP_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def _is_our_temporary(name: str, target: str) -> bool:
    prefix = f".{target}."
    tail = name[len(prefix):]
    return (name.startswith(prefix) and len(tail) == 8
            and all(c in _TEMP_CHARACTERS for c in tail))


def _remove_stale_temporaries(target: Path) -> None:
    """Remove the temporary files a killed writer of `target` left behind (each may hold a
    secret key). Called under `locked(target)`: every writer of ours takes that lock before it
    makes a temporary file, so any one that exists now is stale. Only what is provably ours
    goes: write_atomic's name shape for this target, a regular file (not a link), owned by us."""
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    for name in names:
        if not _is_our_temporary(name, target.name):
            continue
        candidate = target.parent / name
        with contextlib.suppress(OSError):
            info = os.lstat(candidate)
            if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid():
                os.unlink(candidate)


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
    from pathlib import Path

    lock_path = Path(f"{path}.lock")
    try:
        # O_NOFOLLOW: a lock file is never a link (a planted one could point anywhere)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise UsageError(f"Cannot create the lock file {lock_path}: {exc.strerror or exc}.",
                         hint="Check that the directory exists and is writable by you.",
                         code=FILE_CODE) from None
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
                    code=LOCK_CODE,
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
    what: str = "file",
    limit: int = UPDATE_LIMIT,
) -> Path:
    """Read `path` (None if missing), let `change` compute the new content, write it
    atomically with `mode`, all under `locked(path)`. A symbolic link is followed: its target
    is updated, the link stays; but not a link another user planted in a shared sticky
    directory (`resolve_link_safely`). Missing parent directories are created 0700.

    The file must be a regular file of at most `limit` bytes: anything else (a FIFO, a device,
    a link to one, a directory) is refused before the lock file is made, with one line naming
    the file as `what` ("credentials"). The new file keeps the old one's owner and group where
    we may give them (root updating a user's file), and temporary files a killed writer left
    are removed under the lock."""
    from pathlib import Path

    target = resolve_link_safely(Path(path).expanduser(), what=what)
    shown = redact(str(target))

    def fail(reason: str, hint: str = "Give the path of a regular file.") -> UsageError:
        return UsageError(f"Cannot update the {what} file {shown}: {reason}.", hint=hint,
                          code=FILE_CODE)

    try:
        info: os.stat_result | None = os.lstat(target)
    except (FileNotFoundError, NotADirectoryError):  # a file in the way: _make_parents says so
        info = None
    except OSError as exc:
        raise fail(exc.strerror or type(exc).__name__, _PERMISSION_HINT) from None
    if info is not None and not stat.S_ISREG(info.st_mode):  # before the lock file is made
        raise fail(f"it is {_kind(info.st_mode)}, not a regular file")
    if make_parents and info is None:
        _make_parents(target.parent)
    with locked(target, timeout):
        old, owner = _read_for_update(target, limit, fail)
        _remove_stale_temporaries(target)
        new = change(old)
        try:
            write_atomic(target, new, mode, owner=owner)
        except OSError as exc:
            raise UsageError(f"Cannot write {shown}: {exc.strerror or exc}.",
                             hint="Check that the directory is writable by you.",
                             code=FILE_CODE) from None
    return target


_PERMISSION_HINT = "Check the permissions of the file and of the directories on its path."


def _read_for_update(target: Path, limit: int, fail: Callable[..., UsageError],
                     ) -> tuple[bytes | None, tuple[int, int] | None]:
    """The current content and (uid, gid) of `target`, or (None, None) when it is missing.
    Opened without following a link and without blocking (a FIFO swapped in meanwhile is
    refused by fstat, not waited on)."""
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        reason = ("it was replaced by a symbolic link" if exc.errno == errno.ELOOP
                  else exc.strerror or type(exc).__name__)
        raise fail(reason, _PERMISSION_HINT) from None
    try:
        data, info = _read_open(fd, limit, fail)
    finally:
        os.close(fd)
    return data, (info.st_uid, info.st_gid)


def _make_parents(directory: Path) -> None:
    """Create the missing directories down to `directory`, each 0700 (mkdir's parents=True
    would give the umask's mode to all but the last)."""
    missing = []
    try:
        for candidate in (directory, *directory.parents):
            try:
                info = os.stat(candidate)
            except FileNotFoundError:
                missing.append(candidate)
                continue
            if not stat.S_ISDIR(info.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
            break
        for each in reversed(missing):
            each.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"Cannot create the directory {redact(str(directory))}: "
                         f"{exc.strerror or exc}.", hint=_PERMISSION_HINT, code=FILE_CODE) from None


_MAX_LINKS = 40  # as the kernel's ELOOP limit


def resolve_link_safely(path: Path, *, what: str = "file") -> Path:
    """`os.path.realpath(path)`, refusing to follow a symbolic link that another user owns in
    a sticky, world-writable directory (/tmp, /var/tmp, a shared drop directory).

    Such a link is how one user makes another's program write where the first one chose (the
    victim's own files, or root's): the kernel's fs.protected_symlinks rule, applied by us
    whatever the sysctl says, and with a message instead of EACCES. A link owned by us or by
    the directory's owner is followed. A path we may not look at is a usage error too."""
    from pathlib import Path

    current = Path("/")
    absolute = path if path.is_absolute() else Path.cwd() / path  # no lexical `..` folding:
    pending = list(reversed(absolute.parts[1:]))  # `link/..` is the parent of the link's target
    links = 0
    while pending:
        name = pending.pop()
        if name in ("", "."):
            continue
        if name == "..":
            current = current.parent
            continue
        candidate = current / name
        try:
            info = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            return candidate.joinpath(*reversed(pending))  # the rest does not exist yet
        except OSError as exc:
            raise UsageError(f"Cannot reach the {what} file {redact(str(path))}: "
                             f"{exc.strerror or type(exc).__name__} ({redact(str(candidate))}).",
                             hint=_PERMISSION_HINT, code=FILE_CODE) from None
        if not stat.S_ISLNK(info.st_mode):
            current = candidate
            continue
        links += 1
        if links > _MAX_LINKS:
            raise UsageError(f"Cannot reach the {what} file {redact(str(path))}: too many "
                             "levels of symbolic links.", hint="Check the links on its path.",
                             code=FILE_CODE)
        try:
            _refuse_planted_link(candidate, info, current, what)
            target = Path(os.readlink(candidate))
        except OSError as exc:  # changed under us
            raise UsageError(f"Cannot reach the {what} file {redact(str(path))}: "
                             f"{exc.strerror or type(exc).__name__} ({redact(str(candidate))}).",
                             hint=_PERMISSION_HINT, code=FILE_CODE) from None
        if target.is_absolute():
            current = Path("/")
        pending.extend(reversed(target.parts[1:] if target.is_absolute() else target.parts))
    return current


def _refuse_planted_link(link: Path, info: os.stat_result, directory: Path, what: str) -> None:
    directory_info = os.stat(directory)
    shared = directory_info.st_mode & stat.S_ISVTX and directory_info.st_mode & stat.S_IWOTH
    if shared and info.st_uid not in (os.geteuid(), directory_info.st_uid):
        raise UsageError(
            f"The {what} file {redact(str(link))} is a symbolic link owned by another user "
            f"(uid {info.st_uid}) in the shared directory {redact(str(directory))}; it is not "
            "followed.", hint="Remove the link, or use a file in a directory only you can write.",
            code=PLANTED_LINK_CODE)
