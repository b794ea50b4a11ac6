"""CLI: `credential-process`, the drop-in for `aws_signing_helper credential-process`.

Stdout gets exactly one JSON object on success and nothing on failure, because the AWS SDK
that runs us parses it; everything for people goes to stderr (main() prints errors).
"""

from __future__ import annotations

import sys

import typer

from rolesanywhere_hsm.cli import options as o


def credential_process(
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
) -> None:
    """Print temporary credentials as the JSON that AWS `credential_process` reads."""
    o.configure_logging(debug)
    from rolesanywhere_hsm.session import CredentialSession, CredentialSpec

    spec = CredentialSpec(
        certificate=certificate,
        private_key=private_key,
        intermediates=intermediates,
        pkcs11_lib=pkcs11_lib,
        reuse_pin=reuse_pin,
        trust_anchor_arn=trust_anchor_arn,
        profile_arn=profile_arn,
        role_arn=role_arn,
        region=region,
        endpoint=endpoint,
        duration_seconds=session_duration,
        role_session_name=role_session_name,
        verify=o.tls_verify(no_verify_ssl, ca_bundle),
        trust_env=not no_proxy,
    )
    with CredentialSession(spec, pkcs8_password=pkcs8_password) as session:
        credentials = session.fetch()
    sys.stdout.write(credentials.credential_process_json() + "\n")
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("credential-process")(credential_process)
