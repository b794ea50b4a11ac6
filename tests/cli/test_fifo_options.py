"""Every key and certificate option given a FIFO ends at once with a one-line error: nothing the
tool reads may block on a named pipe without a writer (before issue 17, `--private-key FIFO`
hung for ever in the TSS2 key sniffing, before `--timeout` could start).

Each run is in a thread with a deadline; if it blocks, the test opens the FIFO for writing and
closes it (the reader then sees end of file and the run ends), and fails."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.clirunner import run_cli

ARNS = ["--trust-anchor-arn", "arn:aws:rolesanywhere:us-east-1:111122223333:trust-anchor/"
        "0b6b9c7e-6f5c-4c3e-9a3e-2b1d0f5a1c11",
        "--profile-arn", "arn:aws:rolesanywhere:us-east-1:111122223333:profile/"
        "4c1a2b3c-0d1e-4f5a-8b6c-7d8e9f0a1b2c",
        "--role-arn", "arn:aws:iam::111122223333:role/r", "--endpoint", "http://127.0.0.1:9"]
DEADLINE = 20.0  # seconds; a refused FIFO takes milliseconds


def cases(files: Any, fifo: str) -> dict[str, tuple[list[str], int]]:
    cert, key = str(files.certificate), str(files.key)
    return {
        "credential-process --private-key": (
            ["credential-process", "--certificate", cert, "--private-key", fifo, *ARNS], 3),
        "credential-process --certificate": (
            ["credential-process", "--certificate", fifo, "--private-key", key, *ARNS], 3),
        "credential-process --intermediates": (
            ["credential-process", "--certificate", cert, "--private-key", key, "--intermediates", fifo,
             *ARNS], 3),
        "credential-process --ca-bundle": (
            ["credential-process", "--certificate", cert, "--private-key", key, "--ca-bundle", fifo,
             *ARNS], 2),
        "sign-string --private-key": (["sign-string", "--private-key", fifo], 3),
        "sign-string --certificate": (["sign-string", "--certificate", fifo, "--private-key", key], 3),
        "read-certificate-data --certificate": (["read-certificate-data", "--certificate", fifo], 3),
    }


NAMES = list(cases(type("F", (), {"certificate": "", "key": ""})(), ""))


@pytest.mark.parametrize("name", NAMES)
def test_a_fifo_is_refused_at_once(name: str, leaf_files: dict[str, Any], tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    args, code = cases(leaf_files["p256"], str(fifo))[name]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAH_"))}
    done: list[Any] = []
    runner = threading.Thread(target=lambda: done.append(run_cli(*args, env=env)), daemon=True)
    runner.start()
    runner.join(DEADLINE)
    if runner.is_alive():  # blocked on the FIFO: give it a writer that closes at once
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        runner.join(DEADLINE)
        pytest.fail(f"{name} FIFO blocked for {DEADLINE} s")
    [result] = done
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    assert "FIFO" in result.stderr and str(fifo) in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2 and "Traceback" not in result.stderr
