"""Bounded input: regular files only, a size cap per kind, PIN commands capped in output and time.

A FIFO must be refused without blocking: those tests read in a thread and fail (instead of
hanging the suite) when the read is still blocked after a few seconds.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rolesanywhere_hsm.errors import CertificateError, KeyLoadError, PinUnavailableError, UsageError
from rolesanywhere_hsm.files import PIN_FILE_LIMIT, read_regular_file, run_capped
from rolesanywhere_hsm.signers.pin import read_pin_source
from rolesanywhere_hsm.x509 import load_certificates

PIN = "48151623"


def finishes(action: Callable[[], Any], seconds: float = 5.0) -> BaseException | Any:
    """Run `action` in a thread; its exception or result. Fails if it is still blocked."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(action())
        except BaseException as exc:  # noqa: BLE001 (handed back to the test)
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the read blocked"
    return outcome[0]


def test_a_regular_file_up_to_the_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_regular_file(path, what="test", limit=100) == b"x" * 100
    path.write_bytes(b"x" * 101)
    with pytest.raises(UsageError, match=r"Cannot read the test file .*: it is larger than 100 bytes\."):
        read_regular_file(path, what="test", limit=100)


def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    error = finishes(lambda: read_regular_file(fifo, what="certificate", limit=1024, error=CertificateError))
    assert isinstance(error, CertificateError) and error.exit_code == 3
    assert error.message == f"Cannot read the certificate file {fifo}: it is a FIFO (named pipe), not a regular file."


@pytest.mark.parametrize(("path", "kind"), [("/dev/zero", "a character device"), ("/", "a directory")])
def test_devices_and_directories_are_refused(path: str, kind: str) -> None:
    error = finishes(lambda: read_regular_file(path, what="private key", limit=1024, error=KeyLoadError))
    assert isinstance(error, KeyLoadError) and f"it is {kind}, not a regular file" in error.message


def test_a_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        with pytest.raises(UsageError, match="it is a socket"):
            read_regular_file(path, what="CA bundle", limit=1024)


def test_a_symlink_to_a_regular_file_is_read_and_to_a_fifo_refused(tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"data")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert read_regular_file(tmp_path / "link", what="x", limit=10) == b"data"
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "fifo-link").symlink_to(tmp_path / "fifo")
    error = finishes(lambda: read_regular_file(tmp_path / "fifo-link", what="x", limit=10))
    assert isinstance(error, UsageError) and "FIFO" in error.message


def test_messages_quote_the_path_through_redact(tmp_path: Path) -> None:
    with pytest.raises(CertificateError) as info:
        read_regular_file(f" pkcs11:object=k?pin-value={PIN}", what="certificate", limit=10, error=CertificateError)
    assert PIN not in info.value.diagnostics() and "pin-value=<hidden>" in info.value.message
    with pytest.raises(UsageError, match="the path contains a NUL character"):
        read_regular_file("/tmp/a\x00b", what="x", limit=10)


def test_the_certificate_loader_refuses_a_huge_file_without_reading_it(tmp_path: Path) -> None:
    huge = tmp_path / "huge.crt"
    with open(huge, "wb") as handle:  # sparse: 1 GiB on paper, nothing on disk
        handle.truncate(1024 ** 3)
    with pytest.raises(CertificateError, match="is larger than 4 MiB"):
        load_certificates(huge)


def test_pin_file_is_capped_at_one_kib_and_must_be_regular(tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n" + "x" * (PIN_FILE_LIMIT - len(PIN) - 1))  # exactly 1 KiB
    assert read_pin_source(f"file:{pin_file}") == PIN
    pin_file.write_text(PIN + "\n" + "x" * PIN_FILE_LIMIT)
    with pytest.raises(PinUnavailableError, match="is larger than 1 KiB") as info:
        read_pin_source(f"file:{pin_file}")
    assert PIN not in info.value.diagnostics()
    os.mkfifo(tmp_path / "fifo")
    error = finishes(lambda: read_pin_source(f"file:{tmp_path / 'fifo'}"))
    assert isinstance(error, PinUnavailableError) and error.exit_code == 5 and "FIFO" in error.message
    error = finishes(lambda: read_pin_source("/dev/zero"))
    assert isinstance(error, PinUnavailableError) and "character device" in error.message


def test_a_nul_in_a_pin_source_path_is_a_pin_error(tmp_path: Path) -> None:
    with pytest.raises(PinUnavailableError, match="the path contains a NUL character"):
        read_pin_source("file:/tmp/pin%00file")


def test_a_pin_command_that_prints_too_much_is_stopped() -> None:
    source = f"cmd:{sys.executable} -c 'import sys; sys.stdout.write(\"{PIN}\\n\" + \"y\" * 10**8)'"
    start = time.monotonic()
    with pytest.raises(PinUnavailableError, match="printed more than 1 KiB") as info:
        read_pin_source(source)
    assert PIN not in info.value.diagnostics()
    assert time.monotonic() - start < 30


def test_run_capped_reads_the_output_and_the_status() -> None:
    done = run_capped([sys.executable, "-c", "print('1234'); raise SystemExit(4)"], limit=1024, timeout=30)
    assert (done.returncode, done.stdout, done.over_limit) == (4, b"1234\n", False)


def test_run_capped_stops_a_program_at_its_time_limit() -> None:
    import subprocess

    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_capped([sys.executable, "-c", "import time; print('1', flush=True); time.sleep(60)"],
                   limit=1024, timeout=1.0)
    assert time.monotonic() - start < 10
