"""CLI: `doctor`, every link from the key to CreateSession checked, for a person or a script.

Takes credential-process's options (so a failing command line can be rerun with `doctor` in
its place) plus `--trust-anchor-ca` and `--call`. Prints one line per check (or `--json`);
exits 0 when no check failed (warnings allowed), else `EXIT_CHECK_FAILED` (8). Bad options
still exit 2, as for every command.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from rolesanywhere_hsm.cli import options as o

if TYPE_CHECKING:
    from rolesanywhere_hsm.doctor import Check

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


def doctor(
    certificate: o.Certificate,
    trust_anchor_arn: o.TrustAnchorArn,
    profile_arn: o.ProfileArn,
    role_arn: o.RoleArn,
    private_key: o.PrivateKey = None,
    intermediates: o.Intermediates = None,
    region: o.Region = None,
    endpoint: o.Endpoint = None,
    session_duration: o.SessionDuration = 3600,
    role_session_name: o.RoleSessionName = None,
    no_verify_ssl: o.NoVerifySsl = False,
    ca_bundle: o.CaBundle = None,
    with_proxy: o.WithProxy = False,
    no_proxy: o.NoProxy = False,
    debug: o.Debug = False,
    pkcs8_password: o.Pkcs8Password = None,
    pkcs11_lib: o.Pkcs11Lib = None,
    reuse_pin: o.ReusePin = False,
    no_token_chain: o.NoTokenChain = False,
    trust_anchor_ca: Annotated[
        Optional[str],
        typer.Option("--trust-anchor-ca", help="The CA certificate(s) registered in the trust "
                     "anchor (PEM/DER): check the path from the leaf to it."),
    ] = None,
    call: Annotated[
        bool, typer.Option("--call", help="End with a real CreateSession (no credentials are printed).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON for scripts.")] = False,
) -> None:
    """Check each link (module, token, PIN source, certificate, key, chain, ARNs, endpoint,
    clock, proxy) and say how to fix what fails. Exit 0 when nothing fails, 8 when a check fails."""
    o.configure_logging(debug)
    from rolesanywhere_hsm.doctor import EXIT_CHECK_FAILED, DoctorOptions, failed, run_doctor
    from rolesanywhere_hsm.signers.base import SignerConfig

    options = DoctorOptions(
        signer=SignerConfig(
            certificate=certificate, private_key=private_key, intermediates=intermediates,
            pkcs8_password=pkcs8_password, pkcs11_lib=pkcs11_lib, reuse_pin=reuse_pin,
            token_chain=not no_token_chain,
        ),
        trust_anchor_arn=trust_anchor_arn, profile_arn=profile_arn, role_arn=role_arn,
        region=region, endpoint=endpoint, session_duration=session_duration,
        role_session_name=role_session_name, verify=o.tls_verify(no_verify_ssl, ca_bundle),
        trust_env=not no_proxy, trust_anchor_ca=trust_anchor_ca, call=call,
        contain_module_noise=not debug,
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
    app.command("doctor")(doctor)
