"""`credential-process` in a hostile world, as SDKs run it (a subprocess): every fault ends within
the time budget with exit 7 and nothing on stdout; every bad input gets its documented exit code,
with `--debug` too (a traceback then, and the same code)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rolesanywhere_hsm._dev.devpki import CertificateAuthority
from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
from tests.fixtures.faults import FaultServer, credentials_answer, refused_url
from tests.clirunner import run_cli

TIMEOUT = 2.0
# Python start-up and imports on a loaded two-core machine, on top of the budget (runs took up
# to 12 s there while eight test suites shared the cores). The faults themselves would hold the
# process for minutes (drip, silence: 30 s per read, three attempts) without the budget, so a
# generous margin still tells the two apart.
MARGIN = 15.0


@pytest.fixture
def server(root_ca: CertificateAuthority) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig.for_certificates([root_ca.certificate])) as emulator:
        yield emulator


def command(server: Emulator, files: Any, *extra: str, endpoint: str | None = None) -> list[str]:
    return [
        "credential-process",
        "--certificate", str(files.certificate), "--private-key", str(files.key),
        "--trust-anchor-arn", server.trust_anchor_arn, "--profile-arn", server.profile_arn,
        "--role-arn", server.role_arn, "--endpoint", endpoint or server.url, *extra,
    ]


def run(args: list[str], **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAH_"))}
    environment.update(env)
    start = time.monotonic()
    result = run_cli(*args, env=environment)
    return result, time.monotonic() - start


def assert_failure(result: subprocess.CompletedProcess[str], code: int, text: str, *, debug: bool = False) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert text in result.stderr, result.stderr
    if debug:
        assert "Traceback (most recent call last)" in result.stderr
        assert result.stderr.rstrip().splitlines()[-2].startswith("rolesanywhere-hsm: ") or \
            result.stderr.rstrip().splitlines()[-1].startswith("rolesanywhere-hsm: ")
    else:
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert 1 <= len(lines) <= 2 and lines[0].startswith("rolesanywhere-hsm: "), lines


@pytest.mark.parametrize(
    ("fault", "text"),
    [
        ("drip-status", "time budget ran out waiting for the answer"),
        ("silent", "time budget ran out waiting for the answer"),
        ("refused", "Cannot connect to"),
        ("persistent-500", "failed with HTTP 500 (InternalServerException: "),
    ],
)
@pytest.mark.slow  # waits on a clock: the --timeout budget runs out (1-2 s)
def test_every_fault_ends_within_the_budget_with_exit_7(
    fault: str, text: str, server: Emulator, leaf_files: dict[str, Any]
) -> None:
    files = leaf_files["p256"]
    if fault == "refused":
        result, elapsed = run(command(server, files, "--timeout", str(TIMEOUT), endpoint=refused_url()))
    elif fault == "persistent-500":
        server.inject_failures([500] * 50)
        result, elapsed = run(command(server, files, "--timeout", str(TIMEOUT)))
        assert 1 <= len(server.requests) <= 3
    else:
        with FaultServer(fault, interval=0.3) as faulty:
            result, elapsed = run(command(server, files, "--timeout", str(TIMEOUT), endpoint=faulty.url))
        assert "2 s time budget" in result.stderr
        assert elapsed >= TIMEOUT  # it was the budget that ended it
    assert_failure(result, 7, text)
    assert elapsed < TIMEOUT + MARGIN


@pytest.mark.slow  # waits on a clock: the --timeout budget runs out (1-2 s)
def test_rah_timeout_sets_the_budget_and_the_flag_wins(server: Emulator, leaf_files: dict[str, Any]) -> None:
    with FaultServer("silent") as faulty:
        result, elapsed = run(command(server, leaf_files["p256"], endpoint=faulty.url), RAH_TIMEOUT="1")
        assert_failure(result, 7, "The 1 s time budget ran out waiting for the answer of")
        result, _ = run(command(server, leaf_files["p256"], "--timeout", "1.5", endpoint=faulty.url),
                        RAH_TIMEOUT="30")
        assert_failure(result, 7, "The 1.5 s time budget ran out")
    assert elapsed < 1 + MARGIN


@pytest.mark.parametrize(("flag", "env"), [(["--timeout", "0"], {}), (["--timeout", "-3"], {}),
                                           (["--timeout", "nan"], {}), ([], {"RAH_TIMEOUT": "0"})])
def test_an_unusable_budget_is_exit_2_before_anything_is_called(
    flag: list[str], env: dict[str, str], server: Emulator, leaf_files: dict[str, Any]
) -> None:
    result, _ = run(command(server, leaf_files["p256"], *flag), **env)
    assert_failure(result, 2, "is not a usable time budget")
    assert server.requests == []


def test_a_good_run_within_a_small_budget_still_prints_credentials(server: Emulator, leaf_files: dict[str, Any]) -> None:
    result, _ = run(command(server, leaf_files["p256"], "--timeout", "5"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["AccessKeyId"] == server.last_issued.access_key_id


def test_a_201_with_expired_credentials_prints_nothing(server: Emulator, leaf_files: dict[str, Any]) -> None:
    with FaultServer("fixed", payload=credentials_answer(expiration="2020-01-01T00:00:00Z")) as faulty:
        result, _ = run(command(server, leaf_files["p256"], endpoint=faulty.url))
    assert_failure(result, 7, "The service answered with unusable credentials: they expired at 2020-01-01T00:00:00Z.")
    assert "fault-secret" not in result.stderr


def test_an_endless_answer_is_exit_7(server: Emulator, leaf_files: dict[str, Any]) -> None:
    with FaultServer("endless-body") as faulty:
        result, _ = run(command(server, leaf_files["p256"], endpoint=faulty.url))
    assert_failure(result, 7, "is larger than 1 MiB")


# --- Every bad input keeps its exit code, with and without --debug ------------------------------


def _bad_inputs(tmp: Path, files: Any) -> dict[str, tuple[dict[str, str], int, str]]:
    """name -> (options replacing the good ones, exit code, text of the message)."""
    good = files.certificate.read_text().splitlines()
    (tmp / "truncated.crt").write_text("\n".join(good[:4]) + "\n")
    (tmp / "broken.crt").write_text("\n".join(good[:2] + ["@@@@" + good[2][4:]] + good[3:]) + "\n")
    os.mkfifo(tmp / "fifo")
    (tmp / "dir").mkdir()
    return {
        "endpoint with a broken IPv6 literal": ({"--endpoint": "http://[::1"}, 2, "is not a valid URL"),
        "endpoint with a bad port": ({"--endpoint": "http://127.0.0.1:99999"}, 2, "is not a valid URL"),
        "endpoint with an empty label": ({"--endpoint": "https://a..b"}, 2, "is not a valid URL"),
        "truncated PEM": ({"--certificate": str(tmp / "truncated.crt")}, 3, "holds a damaged PEM block"),
        "PEM with a broken body": ({"--certificate": str(tmp / "broken.crt")}, 3, "The certificate cannot be parsed"),
        "FIFO as certificate": ({"--certificate": str(tmp / "fifo")}, 3, "is a FIFO (named pipe), not a regular file"),
        "device as key": ({"--private-key": "/dev/zero"}, 3, "is a character device, not a regular file"),
        "directory as intermediates": ({"--intermediates": str(tmp / "dir")}, 3, "is a directory"),
        "FIFO as CA bundle": ({"--ca-bundle": str(tmp / "fifo"), "--endpoint": "https://127.0.0.1:1"}, 2,
                              "Cannot read the CA bundle file"),
        "CA bundle without certificates": ({"--ca-bundle": str(files.key), "--endpoint": "https://127.0.0.1:1"}, 2,
                                           "holds no usable certificate"),
    }


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_bad_inputs_keep_their_exit_code_with_and_without_debug(
    debug: bool, server: Emulator, leaf_files: dict[str, Any], tmp_path: Path
) -> None:
    files = leaf_files["p256"]
    for name, (options, code, text) in _bad_inputs(tmp_path, files).items():
        args = command(server, files, "--timeout", "3")
        for option, value in options.items():
            if option in args:
                args[args.index(option) + 1] = value
            else:
                args += [option, value]
        if debug:
            args.append("--debug")
        result, _ = run(args)
        try:
            assert_failure(result, code, text, debug=debug)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None
    assert server.requests == []
