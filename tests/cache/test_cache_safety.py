"""Issue 16 items 1, 16 and 17 and the `cache list` descriptions: `cache clear` removes only
what is provably an entry, in a directory that passes the checks a hit makes too (owner, 0700,
not a symlink); the cache key follows the PKCS#11 module's configuration and ignores how the
PIN is found. Planted directories are compared byte for byte before and after."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rolesanywhere_hsm.cache import CredentialCache, entry_file_kind
from rolesanywhere_hsm.credentials import Credentials
from rolesanywhere_hsm.redact import without_pin_attributes
from rolesanywhere_hsm.spec import CredentialSpec

REPO = Path(__file__).resolve().parents[2]
ANCHOR = "arn:aws:rolesanywhere:eu-west-1:111122223333:trust-anchor/11111111-2222-3333-4444-555555555555"
PROFILE = "arn:aws:rolesanywhere:eu-west-1:111122223333:profile/11111111-2222-3333-4444-666666666666"
ROLE = "arn:aws:iam::111122223333:role/Workload"
HEX = "0123456789abcdef" * 2 + "01234567"  # 40 hex digits: an entry's name shape


def fresh() -> Credentials:
    now = dt.datetime.now(dt.timezone.utc)
    return Credentials("ASIAEXAMPLE0000001", "secret-1", "token-1", now + dt.timedelta(hours=1))


def snapshot(root: Path) -> dict[str, tuple[int, bytes | str | None]]:
    """Every path under `root` (links not followed): mode and contents (or link target)."""
    found: dict[str, tuple[int, bytes | str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            body: bytes | str | None = None
            if path.is_symlink():
                body = os.readlink(path)
            elif path.is_file():
                body = path.read_bytes()
            found[str(path.relative_to(root))] = (info.st_mode, body)
    return found


def home_like(root: Path) -> Path:
    """A directory like a home: .ssh and .aws, a foo.json, a lock file, dot-files, and files
    whose names look like ours but whose contents are not entries."""
    root.mkdir(mode=0o700)
    (root / ".ssh").mkdir(mode=0o700)
    (root / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (root / ".aws").mkdir()
    (root / ".aws" / "credentials").write_text("[default]\naws_access_key_id = AKIA\n")
    (root / "foo.json").write_text('{"format": 1}')
    (root / "project.lock").write_text("")
    (root / ".bashrc").write_text("export PATH\n")
    (root / f"{HEX}.json").write_text('{"not": "an entry"}')  # our name, not our contents
    (root / f"{HEX}.lock").write_text("someone's data")
    (root / f".{HEX}.json.abcd1234").write_text("half an entry")
    (root / f"{HEX[::-1]}.json").mkdir()  # our name, a directory
    return root


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rolesanywhere_hsm", "cache", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=60, stdin=subprocess.DEVNULL)


# -- cache clear ----------------------------------------------------------------------------

def test_clear_with_rah_cache_dir_at_a_home_like_directory_removes_only_entries(tmp_path: Path) -> None:
    home = home_like(tmp_path / "home")
    before = snapshot(home)
    cache = CredentialCache(home)
    now = dt.datetime.now(dt.timezone.utc)
    assert cache.store("source-a", fresh(), issued_at=now)
    [entry] = [p for p in home.glob("*.json") if p.name not in ("foo.json", f"{HEX}.json") and p.is_file()]
    result = cli(dict(os.environ, RAH_CACHE_DIR=str(home)), "clear")
    assert result.returncode == 0, result.stderr
    assert "removed 1 entry" in result.stdout
    assert not entry.exists()
    assert snapshot(home) == before  # everything else, byte for byte (and .ssh/.aws not renamed)


@pytest.mark.parametrize("how", ["RAH_CACHE_DIR", "XDG_RUNTIME_DIR"])
def test_clear_in_a_symlinked_directory_touches_nothing(tmp_path: Path, how: str) -> None:
    victim = home_like(tmp_path / "victim")
    CredentialCache(victim).store("source-a", fresh(), issued_at=dt.datetime.now(dt.timezone.utc))
    before = snapshot(victim)
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    link = runtime / "rolesanywhere-hsm"  # the default location, planted as a link
    link.symlink_to(victim)
    env = {k: v for k, v in os.environ.items() if k != "RAH_CACHE_DIR"}
    env.update({"RAH_CACHE_DIR": str(link)} if how == "RAH_CACHE_DIR" else {"XDG_RUNTIME_DIR": str(runtime)})
    result = cli(env, "clear")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "symbolic link" in result.stderr and "nothing was changed" in result.stderr
    assert "Traceback" not in result.stderr
    listed = cli(env, "list")
    assert listed.returncode == 2 and "symbolic link" in listed.stderr
    assert snapshot(victim) == before


def test_clear_in_a_directory_open_to_others_touches_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    cache = CredentialCache(directory)
    cache.store("source-a", fresh(), issued_at=dt.datetime.now(dt.timezone.utc))
    directory.chmod(0o755)
    before = snapshot(directory)
    result = cli(dict(os.environ, RAH_CACHE_DIR=str(directory)), "clear")
    assert result.returncode == 2 and "0755" in result.stderr
    assert snapshot(directory) == before
    assert directory.stat().st_mode & 0o777 == 0o755  # not "repaired" either


def test_name_shapes() -> None:
    assert entry_file_kind(f"{HEX}.json") == "entry"
    assert entry_file_kind(f"{HEX}.lock") == "lock"
    assert entry_file_kind(f".{HEX}.json.k3_9abcd") == "leftover"
    for name in ("foo.json", ".ssh", ".aws", f"{HEX.upper()}.json", f"{HEX}0.json", f".{HEX}.json",
                 f".{HEX}.lock.abcdefgh", f".{HEX}.json.ABCDEFGH", f".{HEX}.json.abcdefg", f"{HEX}.json.bak",
                 f".{HEX}.json.untrusted-1-2", f"x{HEX[1:]}.json"):
        assert entry_file_kind(name) is None, name


def test_a_leftover_that_parses_is_removed_and_one_that_does_not_is_kept(tmp_path: Path) -> None:
    cache = CredentialCache(tmp_path / "cache")
    cache.store("source-a", fresh(), issued_at=dt.datetime.now(dt.timezone.utc))
    [entry] = cache.directory.glob("*.json")
    leftover = cache.directory / f".{entry.name}.x1y2z3w4"
    leftover.write_bytes(entry.read_bytes())  # a write killed after the data, before the rename
    leftover.chmod(0o600)
    partial = cache.directory / f".{entry.name}.q1w2e3r4"
    partial.write_bytes(entry.read_bytes()[:20])
    assert cache.clear() == (1, 1)
    assert sorted(p.name for p in cache.directory.iterdir()) == [partial.name]


# -- a hit checks the directory too (item 17) -----------------------------------------------

def _stored(tmp_path: Path) -> CredentialCache:
    cache = CredentialCache(tmp_path / "cache")
    cache.store("source-a", fresh(), issued_at=dt.datetime.now(dt.timezone.utc))
    assert cache.load("source-a") is not None
    return cache


def test_a_hit_in_a_directory_open_to_others_is_not_used(tmp_path: Path) -> None:
    cache = _stored(tmp_path)
    cache.directory.chmod(0o750)
    assert cache.load("source-a") is None
    cache.directory.chmod(0o700)
    assert cache.load("source-a") is not None


def test_a_hit_through_a_symlinked_directory_is_not_used(tmp_path: Path) -> None:
    cache = _stored(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(cache.directory)
    assert CredentialCache(link).load("source-a") is None


def test_a_hit_in_a_directory_owned_by_another_user_is_not_used(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the directory to another user")
    cache = _stored(tmp_path)
    os.chown(cache.directory, 65534, 65534)
    assert cache.load("source-a") is None


# -- the key (item 16) ----------------------------------------------------------------------

def spec(certificate: str = "pkcs11:token=t;object=k") -> CredentialSpec:
    return CredentialSpec(certificate=certificate, trust_anchor_arn=ANCHOR, profile_arn=PROFILE,
                          role_arn=ROLE)


def test_the_key_follows_the_modules_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith(("SOFTHSM2_", "TPM2_PKCS11_", "P11_KIT_", "TSS2_"))]:
        monkeypatch.delenv(name)
    first = tmp_path / "a.conf"
    first.write_text("directories.tokendir = /a\n")
    second = tmp_path / "b.conf"
    second.write_text("directories.tokendir = /b\n")
    keys = set()
    monkeypatch.setenv("SOFTHSM2_CONF", str(first))
    keys.add(spec().cache_key())
    assert spec().cache_key() in keys  # stable while nothing changes
    monkeypatch.setenv("SOFTHSM2_CONF", str(second))
    keys.add(spec().cache_key())
    first.write_text("directories.tokendir = /c\n")  # the same file, edited
    monkeypatch.setenv("SOFTHSM2_CONF", str(first))
    keys.add(spec().cache_key())
    monkeypatch.setenv("TPM2_PKCS11_STORE", str(tmp_path))
    keys.add(spec().cache_key())
    monkeypatch.setenv("TPM2_PKCS11_TCTI", "swtpm:port=2321")
    keys.add(spec().cache_key())
    monkeypatch.setenv("P11_KIT_SERVER_ADDRESS", "unix:path=/run/p11-kit/pkcs11")
    keys.add(spec().cache_key())
    assert len(keys) == 6
    monkeypatch.setenv("RAH_PKCS11_PIN", "123456")  # a PIN never enters the key
    assert spec().cache_key() in keys


def test_a_tokens_store_directory_in_use_keeps_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TPM2_PKCS11_STORE", str(tmp_path))
    key = spec().cache_key()
    (tmp_path / "tpm2_pkcs11.sqlite3-journal").write_text("")  # the store's database at work
    assert spec().cache_key() == key


@pytest.mark.parametrize("with_pin", [
    "pkcs11:token=t;object=k?pin-value=1234",
    "pkcs11:token=t;object=k?pin-source=file:/run/pin",
    "pkcs11:token=t;object=k?pin-source=env:PIN&pin-value=1%263",
    "pkcs11:token=t;pin-value=99;object=k",
])
def test_pin_attributes_do_not_change_the_key(with_pin: str) -> None:
    assert spec(with_pin).cache_key() == spec().cache_key()
    assert without_pin_attributes(with_pin) == "pkcs11:token=t;object=k"


def test_pin_attributes_leave_the_rest_of_the_uri() -> None:
    assert without_pin_attributes("pkcs11:token=t?pin-value=1&module-path=/m.so") == "pkcs11:token=t?module-path=/m.so"
    assert without_pin_attributes("pkcs11:token=t?module-path=/m.so&pin-source=x") == "pkcs11:token=t?module-path=/m.so"
    assert spec("pkcs11:token=t;object=k?module-path=/a.so").cache_key() != spec().cache_key()


# -- cache list ------------------------------------------------------------------------------

def test_list_shows_no_pin_attributes(tmp_path: Path) -> None:
    """Entries written by an older version carry a pin-source in their description: the
    listing leaves it out, as docs/cli.md says."""
    directory = tmp_path / "cache"
    now = dt.datetime.now(dt.timezone.utc)
    CredentialCache(directory).store(
        "source-a", fresh(), issued_at=now,
        description=f"{ROLE} with pkcs11:token=t;object=k?pin-source=file:/run/secrets/pin")
    listed = cli(dict(os.environ, RAH_CACHE_DIR=str(directory)), "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)["entries"]
    assert row["description"] == f"{ROLE} with pkcs11:token=t;object=k"


def test_new_descriptions_carry_no_pin_attributes() -> None:
    from rolesanywhere_hsm.cli.fast import cache_description

    shown = cache_description(spec("pkcs11:token=t;object=k?pin-source=file:/run/secrets/pin"))
    assert shown == f"{ROLE} with pkcs11:token=t;object=k"


def test_a_description_function_is_called_on_a_miss_only(tmp_path: Path) -> None:
    """credential-process passes its description as a function: a hit quotes nothing, so it
    compiles none of the redaction patterns."""
    cache = CredentialCache(tmp_path / "cache")
    calls = []

    def describe() -> str:
        calls.append(1)
        return "role with pkcs11:token=t"

    cache.get_or_fetch("source-a", fresh, description=describe)
    cache.get_or_fetch("source-a", fresh, description=describe)
    assert len(calls) == 1
    [entry] = cache.entries()
    assert entry.description == "role with pkcs11:token=t"
