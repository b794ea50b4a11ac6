"""CLI: `doctor`, every link from the key to CreateSession checked, for a person or a script.

Takes credential-process's options (so a failing command line can be rerun with `doctor` in
its place) plus `--trust-anchor-ca` and `--call`. Prints one line per check (or `--json`);
exits 0 when no check failed (warnings allowed), else `EXIT_CHECK_FAILED` (8). Bad options
still exit 2, as for every command.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Optional

import typer

from rolesanywhere_hsm.cli.fast import configure_logging
from rolesanywhere_hsm.cli.table import extra_option, table_command

if TYPE_CHECKING:
    from rolesanywhere_hsm.doctor import Check
    from rolesanywhere_hsm.settings import Settings


_MARKS = {"pass": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def render(checks: list[Check]) -> str:
    """The checks for a person: one line each, the fix indented under what did not pass,
    and a last line that says what to do first."""
    lines = []
    width = max((len(c.name) for c in checks), default=0)
    for check in checks:
        lines.append(f"[{_MARKS.get(check.status, check.status)}] {check.name:<{width}}  {check.message}")
        if check.fix and check.status != "pass":
            lines.append(f"       {'':<{width}}  fix: {check.fix}")
    failures = [c for c in checks if c.status == "fail"]
    warnings = [c for c in checks if c.status == "warn"]
    if failures:
        lines.append(f"{len(failures)} check(s) failed; start with {failures[0].name!r}.")
    else:
        lines.append("No check failed" + (f" ({len(warnings)} warning(s))." if warnings else "."))
    return "\n".join(lines)


def doctor(settings: Settings, *, trust_anchor_ca: str | None = None, call: bool = False,
           as_json: bool = False, attestation_roots: str | None = None) -> None:
    """Check each link (module, token, PIN source, certificate, key, chain, ARNs, endpoint,
    clock, proxy) and say how to fix what fails. Exit 0 when nothing fails, 8 when a check fails."""
    configure_logging(settings["debug"])
    from rolesanywhere_hsm.cli.compat import check_store_flags
    from rolesanywhere_hsm.doctor import EXIT_CHECK_FAILED, DoctorOptions, failed, run_doctor
    from rolesanywhere_hsm.keysource import KeySource
    from rolesanywhere_hsm.signers.base import SignerConfig
    from rolesanywhere_hsm.spec import tls_verify

    check_store_flags(settings["system-store-name"], settings["system-store-location"])
    s = settings
    # Not CredentialSpec: doctor reports a bad ARN, certificate or key as a failed check (with
    # its fix) instead of stopping at the first one. (Missing ones are refused by the table.)
    options = DoctorOptions(
        signer=SignerConfig.from_source(KeySource.from_settings(s), pkcs8_password=s["pkcs8-password"],
                                        tpm_key_password=s["tpm-key-password"]),
        trust_anchor_arn=s["trust-anchor-arn"], profile_arn=s["profile-arn"],
        role_arn=s["role-arn"], region=s["region"], endpoint=s["endpoint"],
        session_duration=s["session-duration"], role_session_name=s["role-session-name"],
        verify=tls_verify(s), trust_env=not s["no-proxy"],
        trust_anchor_ca=trust_anchor_ca, call=call, contain_module_noise=not s["debug"],
        attestation_roots=attestation_roots,
    )
    checks = run_doctor(options)
    if as_json:
        payload = {"ok": not failed(checks), "checks": [c.as_dict() for c in checks]}
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    else:
        sys.stdout.write(render(checks) + "\n")
    sys.stdout.flush()
    if failed(checks):
        raise typer.Exit(EXIT_CHECK_FAILED)


def register(app: typer.Typer) -> None:
    app.command("doctor")(table_command("doctor", doctor, extra=[
        extra_option("trust_anchor_ca", Optional[str], None, "--trust-anchor-ca", metavar="FILE",  # noqa: UP045
                     help="The CA certificate(s) registered in the trust anchor (PEM/DER): check "
                     "the path from the leaf to it."),
        extra_option("call", bool, False, "--call",
                     help="End with a real CreateSession (no credentials are printed)."),
        extra_option("as_json", bool, False, "--json", help="Print the checks as JSON for scripts."),
        extra_option("attestation_roots", Optional[str], None, "--attestation-roots", metavar="FILE",  # noqa: UP045
                     help="Trusted attestation roots (PEM): add a check that the key's hardware "
                     "attests it (YubiKey PIV; docs/attestation.md)."),
    ]))
