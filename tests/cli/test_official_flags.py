"""A command line copied from the official helper's docs must parse here: our flag set holds
every flag `aws_signing_helper` defines for the commands we share.

The lists are the official flag definitions (cmd/credentials.go `initCredentialsSubCommand`,
cmd/sign_string.go and cmd/read_certificate_data.go of aws/rolesanywhere-credential-helper,
1.8.x), written out here rather than read from our docs, so the test fails when we drop one.
"""

from __future__ import annotations

import functools
from typing import Any

import typer.main

from rolesanywhere_hsm.cli import app
from tests.clirunner import run_cli

_CREDENTIALS = {
    "--role-arn", "--profile-arn", "--trust-anchor-arn", "--session-duration", "--region", "--endpoint",
    "--no-verify-ssl", "--with-proxy", "--debug", "--certificate", "--private-key", "--intermediates",
    "--cert-selector", "--system-store-name", "--use-latest-expiring-certificate", "--pkcs11-lib",
    "--reuse-pin", "--tpm-key-password", "--no-tpm-key-password", "--role-session-name", "--pkcs8-password",
}
OFFICIAL = {
    "credential-process": _CREDENTIALS,
    "sign-string": {
        "--certificate", "--private-key", "--debug", "--cert-selector", "--system-store-name",
        "--system-store-location", "--use-latest-expiring-certificate", "--pkcs11-lib", "--reuse-pin",
        "--tpm-key-password", "--no-tpm-key-password", "--format", "--digest", "--pkcs8-password",
    },
    "read-certificate-data": {"--certificate", "--cert-selector", "--system-store-name", "--pkcs11-lib", "--debug"},
}


@functools.cache  # one typer build (about 0.1 s of CPU time) for the three commands
def _click_root() -> Any:
    return typer.main.get_command(app)


def our_flags(command: str) -> set[str]:
    click_command = _click_root().commands[command]  # type: ignore[attr-defined]
    return {opt for param in click_command.params for opt in (*param.opts, *param.secondary_opts)
            if opt.startswith("--")}


def test_every_official_flag_is_accepted() -> None:
    for command, official in OFFICIAL.items():
        missing = official - our_flags(command)
        assert not missing, f"{command} lacks the official helper's {sorted(missing)}"


def test_windows_store_flags_parse_and_are_ignored_with_a_debug_note(tmp_path: object) -> None:
    from pathlib import Path

    golden = Path(__file__).resolve().parents[1] / "golden" / "aws-signing-helper-1.8.0"
    result = run_cli("read-certificate-data", "--certificate", str(golden / "inputs" / "p256.pem"),
                     "--system-store-name", "MY", "--debug")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (golden / "outputs" / "read-certificate-data.p256.json").read_text()
    assert "--system-store-name applies to Windows certificate stores only; ignored" in result.stderr
