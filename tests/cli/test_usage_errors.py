"""Usage errors (exit 2) say what is wrong without echoing what was typed: a PIN typed in the
wrong place on a command line must not reach the terminal, a CI log or an SDK's error text."""

from __future__ import annotations

import sys

import pytest

from rolesanywhere_hsm.cli import main
from tests.clirunner import run_process, typer_command_kept

MARKER = "MkPIN-4815162342"
BASE = ["--certificate", "c.pem", "--trust-anchor-arn", "a", "--profile-arn", "b", "--role-arn", "c"]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        with typer_command_kept():  # one typer build for the file, not one per case
            main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["credential-process", *BASE, "--reuse-pin", MARKER], "unexpected extra arguments"),
        (["credential-process", *BASE, MARKER], "unexpected extra arguments"),
        (["credential-process", *BASE, "--session-duration", MARKER], "--session-duration"),
        (["sign-string", "--certificate", "c.pem", "--format", MARKER], "--format"),
        (["sign-string", "--certificate", "c.pem", f"--format={MARKER}"], "--format"),
        (["sign-string", "--certificate", "c.pem", f"--reuse-pin={MARKER}"], "--reuse-pin"),
        (["sign-string", "--certificate", "c.pem", f"--pin={MARKER}"], "No such option: --pin"),
        (["sign-string", "--certificate", "c.pem", f"-{MARKER}"], "No such option"),
        (["sign-string", "--certificate", "c.pem", f"--{MARKER}"], "No such option"),
        ([MARKER], "No such command"),
        (["emulator", "--port", MARKER], "--port"),
        (["credential-process", *BASE, "--debug", "--reuse-pin", MARKER], "unexpected extra"),
    ],
)
def test_usage_errors_exit_2_without_echoing_values(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(argv, capsys)
    assert code == 2
    assert out == ""
    assert says in err
    assert MARKER not in err and MARKER[:6] not in err
    assert "Traceback" not in err
    assert "--help" in err  # where to look next


def test_missing_option_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["sign-string"], capsys)  # needs a key, from either option
    assert code == 2 and "--private-key" in err and "--certificate" in err


def test_a_bad_value_from_the_environment_is_not_echoed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAH_CERTIFICATE", "c.pem")
    code, _, err = run_main(["sign-string", "--format", MARKER], capsys)
    assert code == 2 and MARKER not in err


def test_help_and_no_arguments_still_work(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0 and "credential-process" in out
    code, _, err = run_main([], capsys)
    assert code == 2 and "credential-process" in err  # help on stderr, usage exit code


def test_the_console_script_path_too() -> None:
    """As users run it: a process through `python -m rolesanywhere_hsm`."""
    done = run_process("credential-process", *BASE, "--reuse-pin", MARKER)
    assert done.returncode == 2, done.stderr
    assert MARKER not in done.stderr and done.stdout == ""
