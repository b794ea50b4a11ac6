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
    tpm_key_password: o.TpmKeyPassword = None,
    no_tpm_key_password: o.NoTpmKeyPassword = False,
    cert_selector: o.CertSelector = None,
    use_latest_expiring_certificate: o.UseLatestExpiringCertificate = False,
    system_store_name: o.SystemStoreName = None,
    system_store_location: o.SystemStoreLocation = None,
    timeout: o.Timeout = 20.0,
    no_token_chain: o.NoTokenChain = False,
) -> None:
    """Print temporary credentials as the JSON that AWS `credential_process` reads."""
    o.configure_logging(debug)
    from rolesanywhere_hsm.cli.certificate import check_selector_supported, check_store_flags
    from rolesanywhere_hsm.session import CredentialSession

    check_store_flags(system_store_name, system_store_location)
    if cert_selector:
        from rolesanywhere_hsm.certselector import parse_cert_selector

        check_selector_supported(certificate, parse_cert_selector(cert_selector))
    spec = o.credential_spec(
        certificate=certificate, trust_anchor_arn=trust_anchor_arn, profile_arn=profile_arn,
        role_arn=role_arn, private_key=private_key, intermediates=intermediates, region=region,
        endpoint=endpoint, session_duration=session_duration, role_session_name=role_session_name,
        no_verify_ssl=no_verify_ssl, ca_bundle=ca_bundle, no_proxy=no_proxy, pkcs11_lib=pkcs11_lib,
        reuse_pin=reuse_pin,
        no_tpm_key_password=no_tpm_key_password,
        cert_selector=cert_selector,
        use_latest_expiring_certificate=use_latest_expiring_certificate,
        timeout=timeout,
        token_chain=not no_token_chain,
    )
    with CredentialSession(spec, pkcs8_password=pkcs8_password,
                           tpm_key_password=tpm_key_password) as session:
        credentials = session.fetch()
    sys.stdout.write(credentials.credential_process_json() + "\n")
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("credential-process")(credential_process)
