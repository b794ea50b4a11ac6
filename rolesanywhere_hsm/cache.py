"""A cross-process cache of credentials, so that repeated `credential_process` runs cost a file
read instead of a PIN, a token login, a signature and a CreateSession.

It holds what `~/.aws/credentials` would hold, in a per-user directory (`$XDG_RUNTIME_DIR/
rolesanywhere-hsm/`, else `$XDG_CACHE_HOME/rolesanywhere-hsm/`, i.e. `~/.cache/...`), 0700, one
0600 file per credential source, written atomically; it is opt-in. A file is trusted only when
it is a regular file (not a symlink), owned by us, unreadable by group and others, and parses;
anything else is replaced, with a debug line saying why.

The reuse rule (`reuse_margin`): an entry is handed out until `margin` seconds before it
expires, where `margin = min(16 minutes, lifetime / 2)`. botocore runs a `credential_process`
again as soon as fewer than 15 minutes remain, so for one-hour sessions a cached answer must
keep more than that (16 minutes: 15 plus slack for the caller's own checks), or every AWS call
would run us again; sessions of 32 minutes or less keep half their lifetime, so a 15-minute
session is reused for its first 7.5 minutes (botocore calls us on every command for those, and
each call is then a file read).

Importing this module must stay cheap: a cache hit imports nothing heavier than json and
hashlib (no httpx, cryptography, asn1crypto or PKCS#11), which a test pins.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from rolesanywhere_hsm.credentials import Credentials, format_expiration, parse_expiration

__all__ = [
    "CacheEntry",
    "CredentialCache",
    "cache_directory",
    "reuse_margin",
]

log = logging.getLogger("rolesanywhere_hsm.cache")

BOTOCORE_ADVISORY_SECONDS = 15 * 60  # botocore re-runs credential_process below this
MAX_MARGIN_SECONDS = BOTOCORE_ADVISORY_SECONDS + 60
MAX_ENTRY_BYTES = 64 * 1024  # an entry is a few hundred bytes; a bigger file is not ours
LOCK_WAIT_SECONDS = 30.0  # how long a run waits for another run's fetch before fetching itself
_FORMAT = 1
_SUFFIX = ".json"

Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def reuse_margin(lifetime_seconds: float) -> float:
    """Seconds before expiry at which a cached entry stops being handed out (module docstring)."""
    return max(0.0, min(float(MAX_MARGIN_SECONDS), lifetime_seconds / 2))


def cache_directory(environ: Mapping[str, str] | None = None) -> Path:
    """Where entries live: `RAH_CACHE_DIR`, else under `$XDG_RUNTIME_DIR` (a per-user tmpfs that
    the system empties at logout), else under `$XDG_CACHE_HOME` or `~/.cache`."""
    environ = os.environ if environ is None else environ
    if environ.get("RAH_CACHE_DIR"):
        return Path(environ["RAH_CACHE_DIR"])
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        return Path(runtime) / "rolesanywhere-hsm"
    cache_home = environ.get("XDG_CACHE_HOME")
    base = Path(cache_home) if cache_home and os.path.isabs(cache_home) else Path.home() / ".cache"
    return base / "rolesanywhere-hsm"


@dataclass(frozen=True)
class CacheEntry:
    """What `cache list` shows of one entry: never a secret."""

    name: str
    description: str
    issued_at: dt.datetime | None
    expiration: dt.datetime | None
    problem: str | None = None  # why the entry would not be trusted, if it would not


class _Untrusted(Exception):
    """An entry that must not be used; the message says why (for --debug)."""


class CredentialCache:
    """Entries keyed by a credential source's cache key (computed without touching a token)."""

    def __init__(self, directory: Path | None = None, *, clock: Clock = _utcnow,
                 lock_wait: float = LOCK_WAIT_SECONDS) -> None:
        self.directory = Path(directory) if directory is not None else cache_directory()
        self._clock = clock
        self._lock_wait = lock_wait

    # -- the one operation credential-process needs -------------------------------------------
    def get_or_fetch(self, key: str, fetch: Callable[[], Credentials], *,
                     description: str = "") -> Credentials:
        """A usable cached entry, else `fetch()` once across all processes asking for `key`.

        Concurrent runs on a cold entry queue on a lock file; the first fetches and stores, the
        others find its entry when they get the lock. A cache that cannot be used (a directory
        owned by someone else, a full disk) never stops credentials from being printed.
        """
        hit = self.load(key)
        if hit is not None:
            return hit
        if not self._usable_directory():
            return fetch()
        with self._locked(key):
            hit = self.load(key)
            if hit is not None:
                return hit
            issued_at = self._clock()
            credentials = fetch()
            self.store(key, credentials, issued_at=issued_at, description=description)
            return credentials

    # -- reading ------------------------------------------------------------------------------
    def load(self, key: str) -> Credentials | None:
        """The entry for `key` if it is trusted and has more than the reuse margin left."""
        path = self._path(key)
        try:
            record = self._read_trusted(path)
        except FileNotFoundError:
            return None
        except _Untrusted as exc:
            log.debug("cache entry %s not used: %s; it will be replaced", path.name, exc)
            self._discard(path)
            return None
        if record.get("key") != key:  # a hash collision or a hand-edited file
            log.debug("cache entry %s belongs to another source; it will be replaced", path.name)
            return None
        credentials, issued_at = record["credentials"], record["issued_at"]
        lifetime = (credentials.expiration - issued_at).total_seconds()
        left = credentials.seconds_left(self._clock())
        if left <= reuse_margin(lifetime):
            log.debug("cache entry %s has %.0f s left (margin %.0f s): fetching new credentials",
                      path.name, left, reuse_margin(lifetime))
            return None
        log.debug("cache hit: %s, %.0f s left", path.name, left)
        return credentials

    def _read_trusted(self, path: Path) -> dict[str, object]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise FileNotFoundError(path) from None
            if exc.errno == errno.ELOOP:
                raise _Untrusted("it is a symbolic link") from None
            raise _Untrusted(f"it cannot be opened ({exc.strerror})") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise _Untrusted("it is not a regular file")
            if info.st_uid != os.geteuid():
                raise _Untrusted(f"it is owned by uid {info.st_uid}, not by us")
            if info.st_mode & 0o077:
                raise _Untrusted(f"its mode {stat.S_IMODE(info.st_mode):04o} lets others read it")
            if info.st_size > MAX_ENTRY_BYTES:
                raise _Untrusted(f"it is {info.st_size} bytes, larger than an entry can be")
            data = os.read(fd, MAX_ENTRY_BYTES + 1)
        finally:
            os.close(fd)
        return _parse_entry(data)

    def entries(self) -> list[CacheEntry]:
        """Every entry file with its state, for `cache list`: names and times, no secrets."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("*" + _SUFFIX)):
            try:
                record = self._read_trusted(path)
            except FileNotFoundError:
                continue
            except _Untrusted as exc:
                found.append(CacheEntry(path.name, "", None, None, problem=str(exc)))
                continue
            credentials = record["credentials"]
            assert isinstance(credentials, Credentials)
            found.append(CacheEntry(path.name, str(record.get("description", "")),
                                    record["issued_at"], credentials.expiration))  # type: ignore[arg-type]
        return found

    # -- writing ------------------------------------------------------------------------------
    def store(self, key: str, credentials: Credentials, *, issued_at: dt.datetime,
              description: str = "") -> bool:
        """Write the entry atomically, 0600; False (with a debug line) when it cannot be."""
        from rolesanywhere_hsm.files import write_atomic

        record = {
            "format": _FORMAT,
            "key": key,
            "description": description,
            "issued_at": format_expiration(issued_at),
            "credentials": json.loads(credentials.credential_process_json()),
        }
        path = self._path(key)
        if not self._usable_directory():
            return False
        try:
            if path.is_symlink() or (path.exists() and not path.is_file()):
                self._discard(path)
            write_atomic(path, json.dumps(record, separators=(",", ":")))
        except OSError as exc:
            log.debug("cache entry %s not written: %s", path.name, exc.strerror or exc)
            return False
        return True

    def clear(self) -> int:
        """Remove every entry (and its lock file); the number of entries removed."""
        if not self.directory.is_dir():
            return 0
        removed = 0
        for path in self.directory.iterdir():
            # entries, their lock files, and leftovers (write_atomic's temp files, entries
            # moved aside as untrusted): the directory is ours alone
            if path.suffix in (_SUFFIX, ".lock") or path.name.startswith("."):
                self._discard(path)
                removed += path.suffix == _SUFFIX and not path.name.startswith(".")
        return removed

    # -- plumbing -----------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
        return self.directory / f"{digest}{_SUFFIX}"

    def _usable_directory(self) -> bool:
        """Create the directory 0700 if needed; refuse one that others own or can enter."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = os.lstat(self.directory)
        except OSError as exc:
            log.debug("cache directory %s not usable: %s", self.directory, exc.strerror or exc)
            return False
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            log.debug("cache directory %s is not a directory of ours: cache not used", self.directory)
            return False
        if info.st_mode & 0o077:
            os.chmod(self.directory, 0o700)
        return True

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """files.locked on the entry's lock file, waited for at most `lock_wait` seconds. A run
        must end in bounded time: when the lock cannot be had (held too long, or the file
        cannot be made), it goes on without it, at the cost of a second fetch."""
        from rolesanywhere_hsm.errors import UsageError
        from rolesanywhere_hsm.files import locked

        lock = locked(self._path(key).with_suffix(""), self._lock_wait)
        try:
            lock.__enter__()
        except UsageError as exc:
            log.debug("cache lock not used (%s): fetching without it", exc.message)
            yield
            return
        try:
            yield
        finally:
            lock.__exit__(None, None, None)

    @staticmethod
    def _discard(path: Path) -> None:
        try:
            if path.is_dir() and not path.is_symlink():
                path.rename(path.with_name(f".{path.name}.untrusted-{os.getpid()}-{time.monotonic_ns()}"))
            else:
                path.unlink()
        except OSError as exc:
            log.debug("cannot remove %s: %s", path.name, exc.strerror or exc)


def _parse_entry(data: bytes) -> dict[str, object]:
    """Decode an entry file; anything malformed is untrusted."""
    try:
        record = json.loads(data)
        if not isinstance(record, dict) or record.get("format") != _FORMAT:
            raise ValueError("unknown format")
        fields = record["credentials"]
        credentials = Credentials(
            access_key_id=_text(fields, "AccessKeyId"),
            secret_access_key=_text(fields, "SecretAccessKey"),
            session_token=_text(fields, "SessionToken"),
            expiration=parse_expiration(_text(fields, "Expiration")),
        )
        issued_at = parse_expiration(str(record["issued_at"]))
        if not isinstance(record.get("key"), str):
            raise ValueError("no key")
    except (ValueError, KeyError, TypeError) as exc:
        raise _Untrusted(f"it does not parse ({type(exc).__name__})") from None
    return {"key": record["key"], "description": record.get("description", ""),
            "credentials": credentials, "issued_at": issued_at}


def _text(fields: object, name: str) -> str:
    value = fields.get(name) if isinstance(fields, dict) else None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} missing")
    return value
