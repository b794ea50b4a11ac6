"""Options shared by every command that gets credentials (credential-process, update, serve),
spelled as the official `aws_signing_helper` spells them for drop-in use."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from rolesanywhere_hsm.cli.fast import configure_logging  # one implementation, re-exported

if TYPE_CHECKING:
    from rolesanywhere_hsm.session import CredentialSpec

__all__ = ["configure_logging", "credential_spec", "tls_verify"]

Certificate = Annotated[
    str,
    typer.Option(
        "--certificate",
        help="Leaf certificate: a PEM/DER file, a PKCS#12 file, or a pkcs11: URI.",
        envvar="RAH_CERTIFICATE",
        show_envvar=True,
    ),
]
PrivateKey = Annotated[
    Optional[str],
    typer.Option(
        "--private-key",
        help="Private key: a PEM/DER/PKCS#12 file or a pkcs11: URI. With a pkcs11: certificate "
        "it may be left out: the key with the certificate's CKA_ID is used.",
        envvar="RAH_PRIVATE_KEY",
    ),
]
Intermediates = Annotated[
    Optional[str],
    typer.Option("--intermediates", help="PEM bundle of intermediate CA certificates.", envvar="RAH_INTERMEDIATES"),
]
TrustAnchorArn = Annotated[str, typer.Option("--trust-anchor-arn", help="Trust anchor ARN.", envvar="RAH_TRUST_ANCHOR_ARN")]
ProfileArn = Annotated[str, typer.Option("--profile-arn", help="Profile ARN.", envvar="RAH_PROFILE_ARN")]
RoleArn = Annotated[str, typer.Option("--role-arn", help="Role ARN to assume.", envvar="RAH_ROLE_ARN")]
Region = Annotated[
    Optional[str], typer.Option("--region", help="Signing region; must match the trust anchor's (default).")
]
Endpoint = Annotated[
    Optional[str],
    typer.Option(
        "--endpoint",
        help="Endpoint URL; else AWS_ENDPOINT_URL_ROLESANYWHERE, AWS_ENDPOINT_URL, the regional one.",
    ),
]
SessionDuration = Annotated[
    int, typer.Option("--session-duration", help="Requested session length in seconds (900..43200).")
]
RoleSessionName = Annotated[
    Optional[str], typer.Option("--role-session-name", help="Role session name (the profile must accept it).")
]
NoVerifySsl = Annotated[bool, typer.Option("--no-verify-ssl", help="Do not verify the endpoint's TLS certificate.")]
CaBundle = Annotated[
    Optional[str],
    typer.Option("--ca-bundle", help="CA bundle to verify the endpoint with.", envvar="AWS_CA_BUNDLE"),
]
WithProxy = Annotated[
    bool,
    typer.Option(
        "--with-proxy",
        help="Accepted for compatibility: proxies from HTTPS_PROXY/NO_PROXY are always honoured.",
    ),
]
NoProxy = Annotated[bool, typer.Option("--no-proxy", help="Ignore HTTPS_PROXY and the other proxy variables.")]
Timeout = Annotated[
    float,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        help="Time budget for the call to Roles Anywhere: all attempts, connect, TLS and the answer "
        "together (the PIN prompt is not counted).",
        envvar="RAH_TIMEOUT",
        show_envvar=True,
    ),
]
Debug = Annotated[
    bool, typer.Option("--debug", help="Log each step on stderr and show tracebacks. Never logs secrets.")
]
Pkcs8Password = Annotated[
    Optional[str],
    typer.Option(
        "--pkcs8-password",
        help="Password of an encrypted key file (prefer RAH_PKCS8_PASSWORD or the prompt: argv is visible to other users).",
        envvar="RAH_PKCS8_PASSWORD",
        show_default=False,
    ),
]
Pkcs11Lib = Annotated[
    Optional[str],
    typer.Option("--pkcs11-lib", help="PKCS#11 module when the URI has no module-path.", envvar="RAH_PKCS11_MODULE"),
]
TpmKeyPassword = Annotated[
    Optional[str],
    typer.Option(
        "--tpm-key-password",
        help="Password of a TPM key file (TSS2 PEM) (prefer RAH_TPM_KEY_PASSWORD or the prompt: argv is visible to other users).",
        show_default=False,
    ),
]
NoTpmKeyPassword = Annotated[
    bool,
    typer.Option("--no-tpm-key-password", help="The TPM key file's key has no password: do not ask for one."),
]
NoTokenChain = Annotated[
    bool,
    typer.Option(
        "--no-token-chain",
        help="With a certificate on a token and no --intermediates, send no chain (by default the "
        "issuer path is built from the CA certificates on the same token).",
        envvar="RAH_NO_TOKEN_CHAIN",
    ),
]
ReusePin = Annotated[
    bool,
    typer.Option("--reuse-pin", help="Use the user PIN again for keys that need a PIN before every signature."),
]
CertSelector = Annotated[
    Optional[str],
    typer.Option(
        "--cert-selector",
        help="Pick the certificate by Key=x509Subject,Value=<DN> Key=x509Issuer,Value=<DN> "
        "Key=x509Serial,Value=<hex> (any of them), or file://selector.json holding "
        '[{"Key": ..., "Value": ...}]. Picks among the certificates of the --certificate file.',
    ),
]
UseLatestExpiringCertificate = Annotated[
    bool,
    typer.Option(
        "--use-latest-expiring-certificate",
        help="When --cert-selector matches several certificates, use the one that expires last.",
    ),
]
SystemStoreName = Annotated[
    Optional[str],
    typer.Option(
        "--system-store-name",
        help="Windows certificate store name (official helper): accepted and ignored here.",
        show_default=False,
    ),
]
SystemStoreLocation = Annotated[
    Optional[str],
    typer.Option(
        "--system-store-location",
        help="Windows certificate store location (official helper): accepted and ignored here.",
        show_default=False,
    ),
]


def tls_verify(no_verify_ssl: bool, ca_bundle: str | None) -> bool | str:
    """httpx's `verify`: off, a CA bundle path, or the system store."""
    if no_verify_ssl:
        return False
    return ca_bundle or os.environ.get("AWS_CA_BUNDLE") or True


def credential_spec(
    *,
    certificate: str,
    trust_anchor_arn: str,
    profile_arn: str,
    role_arn: str,
    private_key: str | None,
    intermediates: str | None,
    region: str | None,
    endpoint: str | None,
    session_duration: int,
    role_session_name: str | None,
    no_verify_ssl: bool,
    ca_bundle: str | None,
    no_proxy: bool,
    pkcs11_lib: str | None,
    reuse_pin: bool,
    timeout: float | None = None,
    no_tpm_key_password: bool = False,
    cert_selector: str | None = None,
    use_latest_expiring_certificate: bool = False,
    token_chain: bool = True,
) -> CredentialSpec:
    """The credential options above, checked once, as the session layer's spec."""
    from rolesanywhere_hsm.session import CredentialSpec

    return CredentialSpec(
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
        verify=tls_verify(no_verify_ssl, ca_bundle),
        trust_env=not no_proxy,
        timeout=timeout,
        no_tpm_key_password=no_tpm_key_password,
        cert_selector=cert_selector,
        use_latest_expiring_certificate=use_latest_expiring_certificate,
        token_chain=token_chain,
    )
