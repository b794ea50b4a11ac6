"""The cross-process credential cache: the reuse rule on plain data, trust checks on planted
files, and one fetch for many processes on a cold entry."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rolesanywhere_hsm.cache import CredentialCache, cache_directory, reuse_margin
from rolesanywhere_hsm.credentials import Credentials

REPO = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)


class Clock:
    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def credentials(lifetime: float = 3600, n: int = 1, issued: dt.datetime = T0) -> Credentials:
    return Credentials(f"ASIA{n:016d}", f"secret-{n}", f"token-{n}",
                       issued + dt.timedelta(seconds=lifetime))


class Fetcher:
    def __init__(self, lifetime: float = 3600) -> None:
        self.calls = 0
        self.lifetime = lifetime

    def __call__(self) -> Credentials:
        self.calls += 1
        return credentials(self.lifetime, self.calls)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(tmp_path: Path, clock: Clock) -> CredentialCache:
    return CredentialCache(tmp_path / "cache", clock=clock)


# -- the reuse rule -------------------------------------------------------------------------

def test_one_hour_sessions_keep_more_than_botocores_fifteen_minutes() -> None:
    assert reuse_margin(3600) == 16 * 60
    assert reuse_margin(12 * 3600) == 16 * 60


def test_short_sessions_are_reused_for_half_their_lifetime() -> None:
    assert reuse_margin(900) == 450
    assert reuse_margin(5) == 2.5


@given(st.floats(min_value=1, max_value=43200))
def test_the_margin_never_exceeds_half_the_lifetime_nor_sixteen_minutes(lifetime: float) -> None:
    margin = reuse_margin(lifetime)
    assert 0 < margin <= lifetime / 2
    assert margin <= 16 * 60


# -- hits and misses ------------------------------------------------------------------------

def test_a_miss_fetches_once_and_later_runs_read_the_file(cache: CredentialCache, clock: Clock) -> None:
    fetch = Fetcher()
    first = cache.get_or_fetch("source-a", fetch)
    clock.now = T0 + dt.timedelta(minutes=40)
    second = CredentialCache(cache.directory, clock=clock).get_or_fetch("source-a", fetch)
    assert fetch.calls == 1
    assert second == first


def test_an_entry_past_its_margin_is_fetched_again(cache: CredentialCache, clock: Clock) -> None:
    fetch = Fetcher()
    cache.get_or_fetch("source-a", fetch)
    clock.now = T0 + dt.timedelta(seconds=3600 - 16 * 60)  # exactly the margin left
    renewed = cache.get_or_fetch("source-a", fetch)
    assert fetch.calls == 2
    assert renewed.access_key_id == credentials(n=2).access_key_id


def test_sources_do_not_share_entries(cache: CredentialCache) -> None:
    fetch = Fetcher()
    a = cache.get_or_fetch("source-a", fetch)
    b = cache.get_or_fetch("source-b", fetch)
    assert fetch.calls == 2 and a != b


def test_files_are_owner_only(cache: CredentialCache) -> None:
    cache.get_or_fetch("source-a", Fetcher())
    assert cache.directory.stat().st_mode & 0o777 == 0o700
    [entry] = cache.directory.glob("*.json")
    assert entry.stat().st_mode & 0o777 == 0o600


def test_list_shows_no_secret_and_clear_removes_everything(cache: CredentialCache) -> None:
    cache.get_or_fetch("source-a", Fetcher(), description="role/Workload")
    [entry] = cache.entries()
    assert entry.description == "role/Workload"
    assert entry.problem is None
    assert "secret-1" not in repr(entry) and "token-1" not in repr(entry)
    assert cache.clear() == (1, 0)
    assert list(cache.directory.iterdir()) == []


def test_a_failed_fetch_stores_nothing(cache: CredentialCache) -> None:
    def failing() -> Credentials:
        raise RuntimeError("service down")

    with pytest.raises(RuntimeError):
        cache.get_or_fetch("source-a", failing)
    assert list(cache.directory.glob("*.json")) == []


# -- planted files are never trusted --------------------------------------------------------

def _entry_path(cache: CredentialCache, key: str) -> Path:
    cache.get_or_fetch(key, Fetcher())
    [path] = cache.directory.glob("*.json")
    return path


def _planted(cache: CredentialCache, path: Path) -> Fetcher:
    fetch = Fetcher()
    fetch.calls = 100  # the planted entry would hand out credentials of call 1
    got = cache.get_or_fetch("source-a", fetch)
    assert fetch.calls == 101, "the planted entry was used"
    assert got.secret_access_key == "secret-101"
    assert path.is_file() and not path.is_symlink()
    assert path.stat().st_mode & 0o777 == 0o600
    return fetch


def test_a_world_readable_entry_is_not_used(cache: CredentialCache) -> None:
    path = _entry_path(cache, "source-a")
    path.chmod(0o644)
    _planted(cache, path)


def test_a_symlinked_entry_is_not_used(cache: CredentialCache, tmp_path: Path) -> None:
    path = _entry_path(cache, "source-a")
    elsewhere = tmp_path / "elsewhere.json"
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    _planted(cache, path)
    assert elsewhere.exists(), "the symlink's target must not be touched"


def test_a_corrupt_entry_is_not_used(cache: CredentialCache) -> None:
    path = _entry_path(cache, "source-a")
    path.write_text('{"format": 1, "key": "source-a", "credentials": {"AccessKeyId": ')
    _planted(cache, path)


def test_an_entry_for_another_key_is_not_used(cache: CredentialCache) -> None:
    path = _entry_path(cache, "source-a")
    record = json.loads(path.read_text())
    record["key"] = "source-b"
    path.write_text(json.dumps(record))
    _planted(cache, path)


def test_a_directory_in_place_of_an_entry_is_replaced(cache: CredentialCache) -> None:
    path = _entry_path(cache, "source-a")
    path.unlink()
    path.mkdir()
    _planted(cache, path)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a file owned by another user")
def test_an_entry_owned_by_another_user_is_not_used(cache: CredentialCache) -> None:
    path = _entry_path(cache, "source-a")
    os.chown(path, 65534, 65534)
    _planted(cache, path)


def test_a_directory_owned_by_another_user_is_not_used(tmp_path: Path, clock: Clock) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to plant a directory owned by another user")
    directory = tmp_path / "theirs"
    directory.mkdir(mode=0o700)
    os.chown(directory, 65534, 65534)
    cache = CredentialCache(directory, clock=clock)
    fetch = Fetcher()
    cache.get_or_fetch("source-a", fetch)
    cache.get_or_fetch("source-a", fetch)
    assert fetch.calls == 2
    assert list(directory.iterdir()) == []


# -- where it lives -------------------------------------------------------------------------

def test_directory_prefers_the_runtime_dir(tmp_path: Path) -> None:
    assert cache_directory({"XDG_RUNTIME_DIR": str(tmp_path)}) == str(tmp_path / "rolesanywhere-hsm")
    assert cache_directory({"XDG_RUNTIME_DIR": "/nonexistent", "XDG_CACHE_HOME": str(tmp_path)}) == (
        str(tmp_path / "rolesanywhere-hsm"))
    assert cache_directory({"RAH_CACHE_DIR": "/x", "XDG_RUNTIME_DIR": str(tmp_path)}) == "/x"
    assert cache_directory({}) == str(Path.home() / ".cache" / "rolesanywhere-hsm")


# -- many processes, one fetch --------------------------------------------------------------

_RUN = """
import datetime as dt, os, sys, time
from pathlib import Path
from rolesanywhere_hsm.cache import CredentialCache
from rolesanywhere_hsm.credentials import Credentials
directory, counter = Path(sys.argv[1]), Path(sys.argv[2])
def fetch():
    with open(counter, "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(0.3)  # a slow CreateSession: the others must wait, not fetch
    now = dt.datetime.now(dt.timezone.utc)
    return Credentials(f"ASIA{os.getpid():016d}", "s", "t", now + dt.timedelta(hours=1))
print(CredentialCache(directory).get_or_fetch("source-a", fetch).access_key_id)
"""


def test_parallel_runs_on_a_cold_entry_fetch_once(tmp_path: Path) -> None:
    counter = tmp_path / "fetches"
    runs = [subprocess.Popen([sys.executable, "-c", _RUN, str(tmp_path / "cache"), str(counter)],
                             stdout=subprocess.PIPE, text=True, cwd=REPO) for _ in range(20)]
    printed = {run.communicate(timeout=60)[0].strip() for run in runs}
    assert all(run.returncode == 0 for run in runs)
    assert len(counter.read_text().splitlines()) == 1
    assert len(printed) == 1


def test_a_hit_imports_nothing_heavy(tmp_path: Path) -> None:
    cache = CredentialCache(tmp_path / "cache")
    now = dt.datetime.now(dt.timezone.utc)
    cache.store("source-a", credentials(3600, issued=now), issued_at=now)
    code = (
        "import sys; from pathlib import Path; from rolesanywhere_hsm.cache import CredentialCache;"
        f"c = CredentialCache(Path({str(cache.directory)!r})).load('source-a'); assert c is not None;"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True, cwd=REPO).stdout.split())
    assert not loaded & {"httpx", "cryptography", "asn1crypto", "pkcs11", "typer", "pydantic", "rich"}


def test_cache_list_and_clear_commands(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    now = dt.datetime.now(dt.timezone.utc)
    CredentialCache(directory).store("source-a", credentials(3600, issued=now), issued_at=now,
                                     description="role/Workload via pkcs11:token=ci")
    env = {**os.environ, "RAH_CACHE_DIR": str(directory)}
    listed = subprocess.run([sys.executable, "-m", "rolesanywhere_hsm", "cache", "list", "--json"],
                            capture_output=True, text=True, env=env, cwd=REPO, check=True).stdout
    [row] = json.loads(listed)["entries"]
    assert row["state"] == "valid" and row["description"] == "role/Workload via pkcs11:token=ci"
    assert "secret-1" not in listed and "token-1" not in listed
    cleared = subprocess.run([sys.executable, "-m", "rolesanywhere_hsm", "cache", "clear"],
                             capture_output=True, text=True, env=env, cwd=REPO, check=True).stdout
    assert "removed 1 entry" in cleared
    assert list(directory.glob("*.json")) == []
