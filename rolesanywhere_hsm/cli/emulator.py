"""CLI: `emulator`, the bundled Roles Anywhere emulator as a long-running local server.

Only option parsing lives here; the emulator is rolesanywhere_hsm.emulator. Its imports
(cryptography, http.server) are taken inside the command, because every CLI start-up imports
this module.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from rolesanywhere_hsm.errors import UsageError
from rolesanywhere_hsm.files import write_atomic
from rolesanywhere_hsm.redact import redact

if TYPE_CHECKING:
    from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig

__all__ = ["register"]


def _build_config(
    config_file: Path | None, cas: list[Path], crls: list[Path], trust_anchor_arn: str | None,
    profile_arn: str | None, role_arns: list[str], region: str | None,
) -> EmulatorConfig:
    from rolesanywhere_hsm.emulator import (
        DEFAULT_REGION,
        EmulatorConfig,
        load_certificates,
        load_config,
        load_crls,
    )
    from rolesanywhere_hsm.emulator.resources import parse_arn

    if config_file is not None:
        clashing = [name for name, given in (
            ("--ca", cas), ("--crl", crls), ("--trust-anchor-arn", trust_anchor_arn),
            ("--profile-arn", profile_arn), ("--role-arn", role_arns), ("--region", region),
        ) if given]
        if clashing:
            raise UsageError(
                f"{', '.join(clashing)} cannot be combined with --config; put them in the file",
            )
        return load_config(config_file)
    if not cas:
        raise UsageError(
            "the emulator needs something to trust: give --ca FILE (repeatable) or --config FILE"
        )
    if trust_anchor_arn and region:
        try:
            anchor_region = parse_arn(trust_anchor_arn, "trust-anchor").region
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if anchor_region != region:
            raise UsageError(f"--region {region} is not the trust anchor's region {anchor_region}")
    return EmulatorConfig.for_certificates(
        [cert for path in cas for cert in load_certificates(path)],
        crls=[crl for path in crls for crl in load_crls(path)],
        region=region or DEFAULT_REGION,
        trust_anchor_arn=trust_anchor_arn,
        profile_arn=profile_arn,
        role_arns=role_arns,
    )


def _check_files(port_file: Path | None, tls_cert: Path | None, tls_key: Path | None) -> None:
    """Refuse at once what would hang or fail late: a FIFO or device as a TLS file (ssl would
    block on it or read it whole), a port file that is a directory."""
    from rolesanywhere_hsm.files import KEY_LIMIT, read_regular_file

    for path, what in ((tls_cert, "--tls-cert"), (tls_key, "--tls-key")):
        if path is not None:
            read_regular_file(path, what=what, limit=KEY_LIMIT)
    if port_file is not None and (port_file.is_dir() or (port_file.exists() and not port_file.is_file())):
        raise UsageError(f"--port-file {redact(str(port_file))} exists and is not a regular file",
                         hint="Give the path of a file to create or replace.")


def _announce(emulator: Emulator) -> None:
    config = emulator.config
    lines = [f"rolesanywhere-hsm emulator listening on {emulator.url} (region {config.region})"]
    for anchor in config.trust_anchors.values():
        state = "" if anchor.enabled else " (disabled)"
        lines.append(f"  trust anchor {anchor.arn}{state}: {len(anchor.certificates)} CA "
                     f"certificate(s), {len(anchor.crls)} CRL(s)")
    for profile in config.profiles.values():
        state = "" if profile.enabled else " (disabled)"
        lines.append(f"  profile      {profile.arn}{state}")
        for role in profile.role_arns:
            lines.append(f"    role       {role}")
    if len(config.trust_anchors) == 1 and len(config.profiles) == 1:
        lines.append(
            f"  try: --endpoint {emulator.url} --trust-anchor-arn {config.trust_anchor_arn} "
            f"--profile-arn {config.profile_arn} --role-arn {config.role_arn}"
        )
    print("\n".join(lines), file=sys.stderr, flush=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""

    @app.command("emulator")
    def emulator_command(
        config_file: Annotated[Optional[Path], typer.Option(
            "--config", metavar="FILE", help="TOML or JSON file with trust anchors, CRLs, profiles and roles "
            "(see docs/emulator.md).", envvar="RAH_EMULATOR_CONFIG")] = None,
        ca: Annotated[Optional[list[Path]], typer.Option(
            "--ca", metavar="FILE", help="CA certificate(s) (PEM or DER) to trust as one trust anchor; "
            "repeatable.")] = None,
        crl: Annotated[Optional[list[Path]], typer.Option(
            "--crl", metavar="FILE", help="CRL (PEM or DER) imported into that trust anchor; repeatable.")] = None,
        trust_anchor_arn: Annotated[Optional[str], typer.Option(
            "--trust-anchor-arn", metavar="ARN", help="ARN of the trust anchor (default: derived from the "
            "first CA certificate, so it is stable).")] = None,
        profile_arn: Annotated[Optional[str], typer.Option(
            "--profile-arn", metavar="ARN", help="ARN of the profile (default: derived from the trust "
            "anchor ARN).")] = None,
        role_arn: Annotated[Optional[list[str]], typer.Option(
            "--role-arn", metavar="ARN", help="Role the profile allows; repeatable (default: "
            "arn:aws:iam::ACCOUNT:role/rolesanywhere-hsm-emulator).")] = None,
        region: Annotated[Optional[str], typer.Option(
            "--region", metavar="REGION", help="Region the emulator serves (default: the trust anchor ARN's, "
            "else us-east-1).")] = None,
        host: Annotated[str, typer.Option("--host", metavar="HOST", help="Address to listen on (an empty "
            "one is refused: it would mean every interface).")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", metavar="PORT", help="Port; 0 picks a free one.")] = 0,
        port_file: Annotated[Optional[Path], typer.Option(
            "--port-file", metavar="FILE", help="Write the port here (atomically) once listening.")] = None,
        tls_cert: Annotated[Optional[Path], typer.Option(
            "--tls-cert", metavar="FILE", help="Serve HTTPS with this certificate (PEM).")] = None,
        tls_key: Annotated[Optional[Path], typer.Option(
            "--tls-key", metavar="FILE", help="Private key of --tls-cert (PEM), if not in the same file.")] = None,
        session_duration_max: Annotated[Optional[int], typer.Option(
            "--session-duration-max", metavar="SECONDS", help="MaxSessionDuration of the roles, in seconds "
            "(default 3600, as IAM's).")] = None,
        skew_seconds: Annotated[Optional[int], typer.Option(
            "--skew-seconds", metavar="SECONDS", help="Accepted distance between X-Amz-Date and the clock "
            "(default 300).")] = None,
        max_records: Annotated[int, typer.Option(
            "--max-records", metavar="N", help="Requests kept in memory (the most recent N, without "
            "bodies), so a long-running emulator does not grow.")] = 1000,
        credential_lifetime: Annotated[Optional[int], typer.Option(
            "--credential-lifetime", metavar="SECONDS", help="For tests of refreshing: issued "
            "credentials expire this many seconds after issue (1..43200), below AWS's 900.")] = None,
    ) -> None:
        """Run the Roles Anywhere emulator until interrupted (SIGINT or SIGTERM)."""
        import ssl

        from rolesanywhere_hsm.cli.longrun import LongRunning
        from rolesanywhere_hsm.emulator import Emulator

        config = _build_config(config_file, ca or [], crl or [], trust_anchor_arn, profile_arn,
                               role_arn or [], region)
        if session_duration_max is not None:
            if not 900 <= session_duration_max <= 43200:
                raise UsageError("--session-duration-max must be between 900 and 43200 seconds")
            config.role_max_session_duration = session_duration_max
        if skew_seconds is not None:
            if skew_seconds < 0:
                raise UsageError("--skew-seconds cannot be negative")
            config.skew_seconds = skew_seconds
        if credential_lifetime is not None:
            from rolesanywhere_hsm.emulator.resources import check_credential_lifetime

            check_credential_lifetime(credential_lifetime)
            config.credential_lifetime = credential_lifetime
        if tls_key is not None and tls_cert is None:
            raise UsageError("--tls-key needs --tls-cert")
        if not 0 <= port <= 65535:
            raise UsageError(f"--port {port} is not a TCP port", hint="Give 1..65535, or 0 to pick a free one.")
        _check_files(port_file, tls_cert, tls_key)
        if not host.strip():
            raise UsageError("--host is empty, which would listen on every interface; "
                             "give an address such as 127.0.0.1 (or 0.0.0.0 if you mean every one)")
        if max_records < 0:
            raise UsageError("--max-records cannot be negative")

        # Signals, sd_notify and the stderr log handler go with the command: an in-process
        # caller's stderr may close, and its signal handlers come back.
        with LongRunning("emulator", prefix="emulator: ", loggers=("rolesanywhere_hsm.emulator",),
                         state=lambda: f"{len(emulator.requests)} requests kept, "
                         f"{len(emulator.issued)} of them issued credentials") as life:
            emulator = Emulator(config, host=host, port=port, tls_cert=tls_cert, tls_key=tls_key,
                                max_records=max_records, record_bodies=False)
            try:
                emulator.bind()  # TLS files that cannot be loaded: a UsageError naming the file
            except ssl.SSLError as exc:
                raise UsageError(f"cannot use --tls-cert/--tls-key: {exc.reason or exc}") from None
            except (OSError, OverflowError) as exc:
                reason = getattr(exc, "strerror", None) or exc
                raise UsageError(f"cannot listen on {redact(host)}:{port}: {reason}") from None

            emulator.start()
            try:
                if port_file is not None:
                    try:
                        write_atomic(port_file, f"{emulator.port}\n")
                    except OSError as exc:
                        raise UsageError(f"cannot write --port-file {port_file}: {exc.strerror or exc}") from None
                _announce(emulator)
                life.ready(f"listening on {emulator.url}")
                life.wait()
            finally:
                emulator.stop()
                if port_file is not None:
                    port_file.unlink(missing_ok=True)
            print("rolesanywhere-hsm emulator stopped", file=sys.stderr)
