"""Files we write: atomic, owner-only by default, never keeping an old file's wider mode."""

from __future__ import annotations

from pathlib import Path

from rolesanywhere_hsm.files import write_atomic


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
