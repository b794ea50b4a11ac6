"""Files we write: atomic, owner-only by default, never keeping an old file's wider mode."""

from __future__ import annotations

import os
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


# -- update_atomic on hostile paths (issue 16 items 4, 5, 12, 13, 14) ---------------------------

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


@pytest.mark.parametrize("kind", ["fifo", "device", "link to a device", "directory"])
def test_update_atomic_refuses_what_is_not_a_regular_file_before_making_a_lock(
        tmp_path: Path, kind: str) -> None:
    target = tmp_path / "credentials"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "device":
        if os.geteuid() != 0:
            pytest.skip("making a device node needs root")
        os.mknod(target, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # like /dev/zero
    elif kind == "link to a device":
        target.symlink_to("/dev/zero")
    else:
        target.mkdir()
    started = time.monotonic()
    with pytest.raises(UsageError, match=r"Cannot update the credentials file .*: it is a") as caught:
        update_atomic(target, lambda old: b"never", what="credentials")
    assert time.monotonic() - started < 2  # at once, not after the lock timeout or forever
    assert "\n" not in caught.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["credentials"]  # no lock file beside it
    assert not Path("/dev/zero.lock").exists()


def test_update_atomic_refuses_a_file_over_the_cap_without_reading_it(tmp_path: Path) -> None:
    target = tmp_path / "credentials"
    with target.open("wb") as handle:
        handle.truncate(300 * 1024 * 1024)  # sparse: 300 MB that cost no disk
    with pytest.raises(UsageError, match="larger than 4 MiB"):
        update_atomic(target, lambda old: b"never", what="credentials")
    assert target.stat().st_size == 300 * 1024 * 1024


@needs_root
def test_update_atomic_refuses_a_link_another_user_planted_in_a_sticky_directory(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    victim = tmp_path / "victim"
    victim.write_text("[victim]\n")
    planted = shared / "credentials"
    planted.symlink_to(victim)
    os.lchown(planted, NOBODY, NOBODY)
    with pytest.raises(UsageError, match=r"symbolic link owned by another user \(uid 65534\)") as caught:
        update_atomic(planted, lambda old: b"rewritten", what="credentials")
    assert caught.value.code == "RAH-FILE-003"
    assert victim.read_text() == "[victim]\n" and not (tmp_path / "victim.lock").exists()
    # through a planted link to a directory on the way, too
    planted.unlink()
    (shared / "dir").symlink_to(tmp_path)
    os.lchown(shared / "dir", NOBODY, NOBODY)
    with pytest.raises(UsageError, match="owned by another user"):
        update_atomic(shared / "dir" / "victim", lambda old: b"rewritten")
    assert victim.read_text() == "[victim]\n"
    # our own link there, and another user's link in a directory that is not shared, are followed
    mine = shared / "mine"
    mine.symlink_to(victim)
    update_atomic(mine, lambda old: (old or b"") + b"a\n")
    private = tmp_path / "private"
    private.mkdir()
    theirs = private / "theirs"
    theirs.symlink_to(victim)
    os.lchown(theirs, NOBODY, NOBODY)
    update_atomic(theirs, lambda old: (old or b"") + b"b\n")
    assert victim.read_text() == "[victim]\na\nb\n"


def test_update_atomic_under_a_directory_it_may_not_enter_is_a_usage_error(tmp_path: Path) -> None:
    """Without CAP_DAC_OVERRIDE (as an ordinary user; root here drops it with setpriv), a
    path under a directory we may not search gives EACCES: a usage error, not a traceback."""
    import shutil
    import subprocess
    import sys

    locked_dir = tmp_path / "locked"
    (locked_dir / "aws").mkdir(parents=True)
    locked_dir.chmod(0)
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv is needed to drop root's permission override")
        prefix = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                  "--bounding-set=-dac_override,-dac_read_search"]
    else:
        prefix = []
    script = ("import sys\nfrom rolesanywhere_hsm.errors import UsageError\n"
              "from rolesanywhere_hsm.credentials_file import write_profile\n"
              "from rolesanywhere_hsm.credentials import Credentials\n"
              "import datetime as dt\n"
              "credentials = Credentials('AKIA', 'secret', 'token', dt.datetime.now(dt.timezone.utc))\n"
              "try:\n    write_profile(sys.argv[1], 'default', credentials)\n"
              "except UsageError as e:\n    print(e.code, e.message)\n")
    try:
        result = subprocess.run([*prefix, sys.executable, "-c", script, str(locked_dir / "aws" / "credentials")],
                                capture_output=True, text=True, timeout=60,
                                env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1])))
    finally:
        locked_dir.chmod(0o700)
    assert result.stderr == ""
    assert result.stdout.startswith("RAH-FILE-001 Cannot reach the credentials file"), result.stdout
    assert "Permission denied" in result.stdout


@needs_root
def test_update_atomic_keeps_the_owner_and_group_of_the_file_it_replaces(tmp_path: Path) -> None:
    target = tmp_path / "credentials"
    target.write_text("[other]\n")
    os.chown(target, NOBODY, NOBODY)
    target.chmod(0o644)
    update_atomic(target, lambda old: (old or b"") + b"[default]\n")
    info = target.stat()
    assert (info.st_uid, info.st_gid) == (NOBODY, NOBODY)
    assert stat.S_IMODE(info.st_mode) == 0o600 and target.read_text() == "[other]\n[default]\n"
    update_atomic(tmp_path / "new", lambda old: b"x")  # a new file is ours
    assert (tmp_path / "new").stat().st_uid == os.geteuid()


_KILLED_WRITER = """
import os, sys, time
from rolesanywhere_hsm import files
real_fsync = os.fsync
def fsync_then_hang(fd):
    real_fsync(fd)
    print("written", flush=True)
    time.sleep(60)  # killed here: the temporary file is complete, not yet renamed
files.os.fsync = fsync_then_hang
files.update_atomic(sys.argv[1], lambda old: b"[default]\\naws_secret_access_key = NEWSECRET\\n")
"""


def test_a_writer_killed_mid_write_leaves_a_temporary_file_the_next_update_removes(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    target = tmp_path / "credentials"
    target.write_text("[default]\naws_secret_access_key = OLD\n")
    unrelated = [tmp_path / ".credentials.notours", tmp_path / ".credentials.abcdefgh.bak",
                 tmp_path / ".other.abcdefgh"]
    for path in unrelated:
        path.write_text("keep")
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)], stdout=subprocess.PIPE,
                              text=True, env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1])))
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "written\n"
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.wait(10)
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".credentials.") and p not in unrelated]
    assert len(left) == 1 and b"NEWSECRET" in left[0].read_bytes()  # what the kill leaves
    assert target.read_text() == "[default]\naws_secret_access_key = OLD\n"
    update_atomic(target, lambda old: old or b"")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["credentials", "credentials.lock", *(p.name for p in unrelated)])


def test_links_resolve_as_the_kernel_resolves_them(tmp_path: Path) -> None:
    from rolesanywhere_hsm.files import resolve_link_safely

    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "link").symlink_to(tmp_path / "real" / "sub")
    (tmp_path / "relative").symlink_to("real/sub")
    for path in (tmp_path / "elsewhere" / "link" / ".." / "f",  # `..` after a link: its target's parent
                 tmp_path / "relative" / "new" / "f", tmp_path / "missing" / "f"):
        assert resolve_link_safely(path) == Path(os.path.realpath(path))
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(UsageError, match="too many levels of symbolic links"):
        resolve_link_safely(loop / "f")
