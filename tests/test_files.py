"""Files we write: atomic, owner-only by default, never keeping an old file's wider mode."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from rolesanywhere_hsm.errors import UsageError
from rolesanywhere_hsm.files import locked, update_atomic, write_atomic


def test_write_atomic_replaces_a_world_readable_file_with_an_owner_only_one(tmp_path: Path) -> None:
    target = tmp_path / "pin"
    target.write_text("old")
    target.chmod(0o644)
    write_atomic(target, "new\n")
    assert target.read_text() == "new\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["pin"]  # no temporary file left behind


def test_write_atomic_honours_an_explicit_mode(tmp_path: Path) -> None:
    write_atomic(tmp_path / "port", "8080\n", mode=0o644)
    assert (tmp_path / "port").stat().st_mode & 0o777 == 0o644


def test_update_atomic_follows_a_symlink_and_makes_the_target_owner_only(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.write_bytes(b"a\r\nb")
    real.chmod(0o644)
    link = tmp_path / "link"
    link.symlink_to(real)
    seen: list[bytes | None] = []
    update_atomic(link, lambda old: seen.append(old) or (old or b"") + b"\xff")
    assert seen == [b"a\r\nb"]
    assert link.is_symlink() and real.read_bytes() == b"a\r\nb\xff"  # bytes untouched, not text
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    update_atomic(tmp_path / "new" / "dir" / "file", lambda old: b"x" if old is None else b"?")
    assert (tmp_path / "new" / "dir" / "file").read_bytes() == b"x"
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700


def test_a_held_lock_times_out_with_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / "credentials"
    with locked(target):
        started = time.monotonic()
        with pytest.raises(UsageError, match="held the lock"):
            update_atomic(target, lambda old: b"never", timeout=0.3)
        assert 0.3 <= time.monotonic() - started < 2
    assert not target.exists()
    update_atomic(target, lambda old: b"after")  # released with the block
    assert target.read_bytes() == b"after"
