"""Options shared by every command that gets credentials (credential-process now; update and
serve later), spelled as the official `aws_signing_helper` spells them for drop-in use."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated, Optional

import typer

__all__ = ["configure_logging", "tls_verify"]

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


def configure_logging(debug: bool) -> None:
    """Debug logs go to stderr (stdout belongs to the SDK reading our JSON)."""
    if debug:
        logging.basicConfig(
            stream=sys.stderr, level=logging.DEBUG, format="rolesanywhere-hsm: %(name)s: %(message)s"
        )
        # httpx/httpcore debug lines carry headers; ours are enough and carry no secrets.
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def tls_verify(no_verify_ssl: bool, ca_bundle: str | None) -> bool | str:
    """httpx's `verify`: off, a CA bundle path, or the system store."""
    if no_verify_ssl:
        return False
    return ca_bundle or os.environ.get("AWS_CA_BUNDLE") or True
