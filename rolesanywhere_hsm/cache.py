"""A cross-process cache of credentials, so that repeated `credential_process` runs cost a file
read instead of a PIN, a token login, a signature and a CreateSession.

It holds what `~/.aws/credentials` would hold, in a per-user directory (`RAH_CACHE_DIR`, else
`$XDG_RUNTIME_DIR/rolesanywhere-hsm/`, else `$XDG_CACHE_HOME/rolesanywhere-hsm/`, i.e.
`~/.cache/...`), one 0600 file per credential source, written atomically; it is opt-in.

The directory is trusted only when it is a directory (not a symlink), owned by us and closed to
group and others (0700 or stricter); that is checked with one `lstat` on every use, a hit
included, and a directory that fails is never used, never repaired (a `chmod` on a directory
someone pointed us at, `$HOME` say, would be ours to regret) and never cleared. A file is
trusted only when it is a regular file (not a symlink), owned by us, unreadable by group and
others, and parses; an untrusted file at an entry's own name is replaced, with a debug line
saying why. `clear()` removes only what is provably an entry or one of its files: the name
shape (`<40 hex>.json`, its `.lock`, the atomic writer's `.<40 hex>.json.XXXXXXXX` leftovers),
a regular file owned by us, and (for entries and leftovers) contents that parse as an entry.
Anything else in the directory is left alone, byte for byte.

The reuse rule (`reuse_margin`): an entry is handed out until `margin` seconds before it
expires, where `margin = min(16 minutes, lifetime / 2)`. botocore runs a `credential_process`
again as soon as fewer than 15 minutes remain, so for one-hour sessions a cached answer must
keep more than that (16 minutes: 15 plus slack for the caller's own checks), or every AWS call
would run us again; sessions of 32 minutes or less keep half their lifetime, so a 15-minute
session is reused for its first 7.5 minutes (botocore calls us on every command for those, and
each call is then a file read).

Importing this module must stay cheap: a cache hit (`CredentialCache.hit_output`) reads the
entry with a small reader of the JSON we write and does the reuse rule on epoch seconds, so it
imports no json (which imports re and enum) and no datetime; nor dataclasses, pathlib, logging,
hashlib's OpenSSL (rolesanywhere_hsm.digest), httpx, cryptography, asn1crypto or PKCS#11, which
tests pin. Whatever that reader does not take (an escape it does not know, a timestamp in
another form) is left to `load`, which reads the entry with json and datetime and decides as
before. Debug lines go through `logging` only when something has imported it (`--debug` does,
and so does any program that configures logging).
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time

from rolesanywhere_hsm.digest import sha256_hex

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a cache hit
if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable, Mapping
    from pathlib import Path
    from typing import Any

    from rolesanywhere_hsm.credentials import Credentials

    Clock = Callable[[], dt.datetime]

__all__ = [
    "CacheEntry",
    "CredentialCache",
    "cache_directory",
    "reuse_margin",
]

BOTOCORE_ADVISORY_SECONDS = 15 * 60  # botocore re-runs credential_process below this
MAX_MARGIN_SECONDS = BOTOCORE_ADVISORY_SECONDS + 60
MAX_ENTRY_BYTES = 64 * 1024  # an entry is a few hundred bytes; a bigger file is not ours
LOCK_WAIT_SECONDS = 30.0  # how long a run waits for another run's fetch before fetching itself
_FORMAT = 1
_SUFFIX = ".json"
_DIGEST_CHARS = 40
_HEX = frozenset("0123456789abcdef")
_TEMP_TAIL_CHARS = 8  # tempfile.mkstemp's random part, which files.write_atomic uses
_TEMP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def _debug(message: str, *args: object) -> None:
    """A debug line, when logging is in use: importing logging costs a cache hit more than
    reading the entry does, and without `--debug` no handler would print the line anyway."""
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.getLogger("rolesanywhere_hsm.cache").debug(message, *args)


def _utcnow() -> dt.datetime:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc)


def reuse_margin(lifetime_seconds: float) -> float:
    """Seconds before expiry at which a cached entry stops being handed out (module docstring)."""
    return max(0.0, min(float(MAX_MARGIN_SECONDS), lifetime_seconds / 2))


def cache_directory(environ: Mapping[str, str] | None = None) -> str:
    """Where entries live: `RAH_CACHE_DIR` (the directory itself, for a tmpfs of one's choice
    or a test; it gets the same checks as the default), else under `$XDG_RUNTIME_DIR` (a
    per-user tmpfs that the system empties at logout), else under `$XDG_CACHE_HOME` or
    `~/.cache`."""
    environ = os.environ if environ is None else environ
    if environ.get("RAH_CACHE_DIR"):
        return os.path.abspath(environ["RAH_CACHE_DIR"])
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        return os.path.join(runtime, "rolesanywhere-hsm")
    cache_home = environ.get("XDG_CACHE_HOME")
    if not (cache_home and os.path.isabs(cache_home)):
        cache_home = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache_home, "rolesanywhere-hsm")


def directory_problem(info: os.stat_result) -> str | None:
    """Why a directory (its `lstat`) must not hold our entries, or None when it may."""
    if stat.S_ISLNK(info.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(info.st_mode):
        return "it is not a directory"
    if info.st_uid != os.geteuid():
        return f"it is owned by uid {info.st_uid}, not by us"
    if info.st_mode & 0o077:
        return f"its mode {stat.S_IMODE(info.st_mode):04o} lets others in (it must be 0700)"
    return None


def entry_file_kind(name: str) -> str | None:
    """What a file name in the cache directory is by its shape: "entry" (`<40 hex>.json`),
    "lock" (`<40 hex>.lock`), "leftover" (the atomic writer's `.<40 hex>.json.XXXXXXXX`), or
    None: not a name we ever create."""
    hidden = name.startswith(".")
    stem, dot, rest = name[hidden:].partition(".")
    if len(stem) != _DIGEST_CHARS or not _HEX.issuperset(stem) or not dot:
        return None
    if not hidden:
        return {"json": "entry", "lock": "lock"}.get(rest)
    tail = rest[len("json."):]
    if rest.startswith("json.") and len(tail) == _TEMP_TAIL_CHARS and _TEMP_CHARS.issuperset(tail):
        return "leftover"
    return None


class CacheEntry:
    """What `cache list` shows of one entry: never a secret."""

    __slots__ = ("description", "expiration", "issued_at", "name", "problem")

    def __init__(self, name: str, description: str, issued_at: dt.datetime | None,
                 expiration: dt.datetime | None, problem: str | None = None) -> None:
        self.name = name
        self.description = description
        self.issued_at = issued_at
        self.expiration = expiration
        self.problem = problem  # why the entry would not be trusted, if it would not

    def __repr__(self) -> str:
        return (f"CacheEntry(name={self.name!r}, description={self.description!r}, "
                f"issued_at={self.issued_at!r}, expiration={self.expiration!r}, problem={self.problem!r})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CacheEntry) and all(
            getattr(self, n) == getattr(other, n) for n in self.__slots__)


class CacheDirectoryError(Exception):
    """The cache directory fails the checks (`directory_problem`); the message says why."""


class _Untrusted(Exception):
    """An entry that must not be used; the message says why (for --debug)."""


class CredentialCache:
    """Entries keyed by a credential source's cache key (computed without touching a token)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None, *, clock: Clock = _utcnow,
                 lock_wait: float = LOCK_WAIT_SECONDS) -> None:
        self._dir = os.fspath(directory) if directory is not None else cache_directory()
        self._clock = clock
        self._lock_wait = lock_wait

    @property
    def directory(self) -> Path:
        """The directory as a Path (for `cache list` and tests; the hit path uses strings)."""
        from pathlib import Path

        return Path(self._dir)

    # -- the one operation credential-process needs -------------------------------------------
    def get_or_fetch(self, key: str, fetch: Callable[[], Credentials], *,
                     description: str | Callable[[], str] = "") -> Credentials:
        """A usable cached entry, else `fetch()` once across all processes asking for `key`.
        `description` (for `cache list`) may be a function: it is then called only on a miss.

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
            self.store(key, credentials, issued_at=issued_at,
                       description=description() if callable(description) else description)
            return credentials

    # -- reading ------------------------------------------------------------------------------
    def load(self, key: str) -> Credentials | None:
        """The entry for `key` if the directory and the entry are trusted and the entry has more
        than the reuse margin left."""
        if self._directory_problem() is not None:
            return None
        path = self._path(key)
        name = os.path.basename(path)
        try:
            record = _read_entry(path)
        except FileNotFoundError:
            return None
        except _Untrusted as exc:
            _debug("cache entry %s not used: %s; it will be replaced", name, exc)
            self._discard(path)
            return None
        if record["key"] != key:  # a hash collision or a hand-edited file
            _debug("cache entry %s belongs to another source; it will be replaced", name)
            return None
        credentials, issued_at = record["credentials"], record["issued_at"]
        lifetime = (credentials.expiration - issued_at).total_seconds()
        left = credentials.seconds_left(self._clock())
        if left <= reuse_margin(lifetime):
            _debug("cache entry %s has %.0f s left (margin %.0f s): fetching new credentials",
                   name, left, reuse_margin(lifetime))
            return None
        _debug("cache hit: %s, %.0f s left", name, left)
        return credentials

    def hit_output(self, key: str, now: float | None = None) -> str | None:
        """The line `credential_process` prints for `key` (without its newline), from an entry
        that `load` would hand out, read without json or datetime (module docstring); None for
        anything else (no entry, an untrusted one, one that needs json to read, one too close to
        expiry), and then `load` decides as it always has. `now`: epoch seconds (for tests)."""
        try:
            if directory_problem(os.lstat(self._dir)) is not None:
                return None
            path = self._path(key)
            record = _plain_json(_read_entry_bytes(path))
        except (OSError, _Untrusted):
            return None
        if record is None or record.get("format") != _FORMAT or record.get("key") != key:
            return None
        fields = record.get("credentials")
        if not isinstance(fields, dict):
            return None
        values = tuple(fields.get(name) for name in _OUTPUT_FIELDS)
        if not all(isinstance(v, str) and v and _PLAIN.issuperset(v) for v in values):
            return None  # json.dumps would escape something: load's way prints it
        expires, issued = epoch_seconds(values[-1]), epoch_seconds(record.get("issued_at"))
        if expires is None or issued is None:
            return None
        left = expires - (time.time() if now is None else now)
        if left <= reuse_margin(expires - issued):
            return None  # load says why under --debug
        _debug("cache hit: %s, %.0f s left", os.path.basename(path), left)
        # Credentials.credential_process_json's text: compact, the keys in its order
        return '{"Version":1,' + ",".join(f'"{n}":"{v}"' for n, v in zip(_OUTPUT_FIELDS, values)) + "}"

    def directory_problem(self) -> str | None:
        """Why the directory may not be used (None when it may, or does not exist yet)."""
        try:
            return directory_problem(os.lstat(self._dir))
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"it cannot be examined ({exc.strerror or exc})"

    def _directory_problem(self) -> str | None:
        """directory_problem() for the hit path: a missing directory is a miss too."""
        try:
            info = os.lstat(self._dir)
        except OSError as exc:
            problem = ("it does not exist" if exc.errno == errno.ENOENT
                       else f"it cannot be examined ({exc.strerror})")
        else:
            problem = directory_problem(info)
        if problem is not None:
            _debug("cache directory %s not used: %s", self._dir, problem)
        return problem

    def entries(self) -> list[CacheEntry]:
        """Every entry file with its state, for `cache list`: names and times, no secrets.
        A directory that fails the checks raises CacheDirectoryError."""
        problem = self.directory_problem()
        if problem is not None:
            raise CacheDirectoryError(problem)
        if not os.path.isdir(self._dir):
            return []
        found = []
        for name in sorted(os.listdir(self._dir)):
            if entry_file_kind(name) != "entry":
                continue
            try:
                record = _read_entry(os.path.join(self._dir, name))
            except FileNotFoundError:
                continue
            except _Untrusted as exc:
                found.append(CacheEntry(name, "", None, None, problem=str(exc)))
                continue
            found.append(CacheEntry(name, record["description"], record["issued_at"],
                                    record["credentials"].expiration))
        return found

    # -- writing ------------------------------------------------------------------------------
    def store(self, key: str, credentials: Credentials, *, issued_at: dt.datetime,
              description: str = "") -> bool:
        """Write the entry atomically, 0600; False (with a debug line) when it cannot be."""
        import json

        from rolesanywhere_hsm.credentials import format_expiration
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
            if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
                self._discard(path)
            write_atomic(path, json.dumps(record, separators=(",", ":")))
        except OSError as exc:
            _debug("cache entry %s not written: %s", os.path.basename(path), exc.strerror or exc)
            return False
        return True

    def clear(self) -> tuple[int, int]:
        """Remove every entry and its files; (entries removed, other files left alone).

        Only what is provably ours goes (module docstring): a name of ours, a regular file owned
        by us, and for entries and leftovers contents that parse as an entry. A directory that
        fails the checks is not touched at all: CacheDirectoryError.
        """
        problem = self.directory_problem()
        if problem is not None:
            raise CacheDirectoryError(problem)
        try:
            names = os.listdir(self._dir)
        except FileNotFoundError:
            return 0, 0
        removed = kept = 0
        for name in names:
            kind = entry_file_kind(name)
            path = os.path.join(self._dir, name)
            if kind is None or not _provably_ours(path, kind):
                kept += 1
                continue
            try:
                os.unlink(path)
            except OSError as exc:
                _debug("cannot remove %s: %s", name, exc.strerror or exc)
                kept += 1
                continue
            removed += kind == "entry"
        return removed, kept

    # -- plumbing -----------------------------------------------------------------------------
    def _path(self, key: str) -> str:
        digest = sha256_hex(key.encode("utf-8"))[:_DIGEST_CHARS]
        return os.path.join(self._dir, digest + _SUFFIX)

    def _usable_directory(self) -> bool:
        """Create the directory 0700 if needed; refuse one that fails the checks."""
        try:
            os.makedirs(self._dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            _debug("cache directory %s not usable: %s", self._dir, exc.strerror or exc)
            return False
        return self._directory_problem() is None

    def _locked(self, key: str) -> _Lock:
        return _Lock(self._path(key)[:-len(_SUFFIX)], self._lock_wait)

    @staticmethod
    def _discard(path: str) -> None:
        """Remove an untrusted file at an entry's own name (a directory there is moved aside,
        never removed): only called inside a directory that passed the checks."""
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                head, name = os.path.split(path)
                os.rename(path, os.path.join(head, f".{name}.untrusted-{os.getpid()}-{time.monotonic_ns()}"))
            else:
                os.unlink(path)
        except OSError as exc:
            _debug("cannot remove %s: %s", os.path.basename(path), exc.strerror or exc)


class _Lock:
    """files.locked on the entry's lock file, waited for at most `lock_wait` seconds. A run must
    end in bounded time: when the lock cannot be had (held too long, or the file cannot be
    made), it goes on without it, at the cost of a second fetch."""

    def __init__(self, path: str, wait: float) -> None:
        self._path, self._wait, self._held = path, wait, None

    def __enter__(self) -> None:
        from rolesanywhere_hsm.errors import UsageError
        from rolesanywhere_hsm.files import locked

        lock = locked(self._path, self._wait)
        try:
            lock.__enter__()
        except UsageError as exc:
            _debug("cache lock not used (%s): fetching without it", exc.message)
            return
        self._held = lock

    def __exit__(self, *exc_info: object) -> None:
        if self._held is not None:
            self._held.__exit__(None, None, None)
            self._held = None


def _provably_ours(path: str, kind: str) -> bool:
    """For clear(): a regular file owned by us; an entry or leftover that parses; a lock file
    that is empty (files.locked never writes to it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return False
        if kind == "lock":
            return info.st_size == 0
        if info.st_size > MAX_ENTRY_BYTES:
            return False
        data = os.read(fd, MAX_ENTRY_BYTES + 1)
    finally:
        os.close(fd)
    try:
        _parse_entry(data)
    except _Untrusted:
        return False
    return True


def _read_entry(path: str) -> dict[str, Any]:
    """The entry at `path` if it is trusted (module docstring), else _Untrusted; a missing file
    is FileNotFoundError."""
    return _parse_entry(_read_entry_bytes(path))


def _read_entry_bytes(path: str) -> bytes:
    """The bytes of the entry file at `path` if the file is trusted, else _Untrusted; a missing
    file is FileNotFoundError."""
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
    return data


def _parse_entry(data: bytes) -> dict[str, Any]:
    """Decode an entry file; anything malformed is untrusted."""
    import json

    from rolesanywhere_hsm.credentials import Credentials, parse_expiration

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
    return {"key": record["key"], "description": str(record.get("description", "")),
            "credentials": credentials, "issued_at": issued_at}


# -- the hit's reader: json.loads and parse_expiration for what we write, and nothing else ------
_OUTPUT_FIELDS = ("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration")
# What json.dumps (ensure_ascii) writes as it is: printable ASCII but `"` and `\`.
_PLAIN = frozenset(map(chr, range(0x20, 0x7F))) - {'"', "\\"}
_DIGITS = frozenset("0123456789")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _plain_json(data: bytes) -> dict[str, Any] | None:
    """`json.loads(data)` when `data` is an object in the compact form we write, of objects,
    strings and non-negative integers; None for anything else (whitespace, arrays, floats,
    true/false/null, a lone surrogate escape, a BOM), which json is left to read. What this accepts,
    json reads to the same value (tests hold it to json.loads)."""
    try:
        text = data.decode("utf-8")
        value, end = _plain_value(text, 0)
    except (ValueError, IndexError, KeyError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return value if end == len(text) and isinstance(value, dict) else None


def _plain_value(text: str, i: int) -> tuple[Any, int]:
    c = text[i]
    if c == '"':
        return _plain_string(text, i + 1)
    if c == "{":
        found: dict[str, Any] = {}
        i += 1
        if text[i] == "}":
            return found, i + 1
        while True:
            if text[i] != '"':
                raise ValueError("a name")
            name, i = _plain_string(text, i + 1)
            if text[i] != ":":
                raise ValueError("a colon")
            found[name], i = _plain_value(text, i + 1)  # a repeated name: the last wins, as in json
            if text[i] == "}":
                return found, i + 1
            if text[i] != ",":
                raise ValueError("a comma")
            i += 1
    end = i
    while end < len(text) and text[end] in _DIGITS:
        end += 1
    digits = text[i:end]
    if not digits or (digits[0] == "0" and len(digits) > 1) or text[end:end + 1] in (".", "e", "E"):
        raise ValueError("not a plain integer")
    return int(digits), end


def _plain_string(text: str, i: int) -> tuple[str, int]:
    """The string whose text starts at `i` (after its quote), and the index after its end."""
    parts = []
    while True:
        end = text.index('"', i)
        escape = text.find("\\", i, end)
        raw = text[i:end if escape == -1 else escape]
        if raw and min(raw) < " ":
            raise ValueError("a control character")  # json's strict mode refuses them too
        parts.append(raw)
        if escape == -1:
            return "".join(parts), end + 1
        kind = text[escape + 1]
        if kind == "u":
            code = _hex4(text, escape + 2)
            i = escape + 6
            if 0xD800 <= code <= 0xDBFF and text[i:i + 2] == "\\u":  # a pair: one character
                low = _hex4(text, i + 2)
                if 0xDC00 <= low <= 0xDFFF:
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    i += 6
            if 0xD800 <= code <= 0xDFFF:
                raise ValueError("a lone surrogate")
            parts.append(chr(code))
        else:
            parts.append(_ESCAPES[kind])
            i = escape + 2


def _hex4(text: str, i: int) -> int:
    digits = text[i:i + 4]
    if len(digits) != 4 or not _HEX_DIGITS.issuperset(digits):
        raise ValueError("a bad escape")
    return int(digits, 16)


def epoch_seconds(text: object) -> int | None:
    """`2026-01-16T00:02:43Z` (format_expiration's form, the only one we write) as seconds since
    the epoch, without datetime; None for any other text, or a date that does not exist."""
    if not (isinstance(text, str) and len(text) == 20 and text[4] == text[7] == "-" and text[10] == "T"
            and text[13] == text[16] == ":" and text[19] == "Z"):
        return None
    numbers = (text[0:4], text[5:7], text[8:10], text[11:13], text[14:16], text[17:19])
    if not all(_DIGITS.issuperset(n) for n in numbers):
        return None
    year, month, day, hour, minute, second = map(int, numbers)
    if not (year >= 1 and 1 <= month <= 12 and hour < 24 and minute < 60 and second < 60):
        return None
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= day <= (29 if month == 2 and leap else _MONTH_DAYS[month - 1]):
        return None
    # days from 1970-01-01 to the date (the proleptic Gregorian calendar, as datetime's)
    y = year - (month <= 2)
    era, year_of_era = divmod(y, 400)
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146097 + day_of_era - 719468
    return days * 86400 + hour * 3600 + minute * 60 + second


_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _text(fields: object, name: str) -> str:
    value = fields.get(name) if isinstance(fields, dict) else None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} missing")
    return value
