"""CLI: `dev-ca init` and `dev-ca sign`, a TEST certificate authority for trying the onboarding
offline (SoftHSM, the emulator, a lab account). Its key is an unencrypted file: it must never
be the CA behind a trust anchor that guards real roles. The CA itself is
rolesanywhere_hsm._dev.devpki; cryptography is imported inside the commands (start-up cost)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rolesanywhere_hsm.cli import options as o

__all__ = ["register"]

_WARNING = ("TEST CA: its key is a plain file (mode 0600). Use it to try the onboarding offline; "
            "never as the CA of a trust anchor that guards real roles.")

devca_app = typer.Typer(
    help=f"A TEST certificate authority to sign a `csr` request offline. {_WARNING}",
    no_args_is_help=True, add_completion=False, rich_markup_mode=None)


@devca_app.command("init")
def init(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Directory for ca.pem and ca.key (made 0700 if new).")],
    name: Annotated[str, typer.Option("--name", help="The CA's common name.")] = "rolesanywhere-hsm TEST CA",
    key_type: Annotated[str, typer.Option("--key-type", help="p256 (default), p384, rsa2048, rsa3072 or rsa4096.")] = "p256",
    days: Annotated[int, typer.Option("--days", help="Validity of the CA certificate in days (1..3650).")] = 3650,
    debug: o.Debug = False,
) -> None:
    """Make a TEST CA in DIR: ca.pem (the certificate, for a CERTIFICATE_BUNDLE trust anchor or
    the emulator's --ca) and ca.key (its unencrypted key, mode 0600). Refuses a DIR that holds
    one already."""
    o.configure_logging(debug)
    from rolesanywhere_hsm._dev.devpki import CertificateAuthority, save_test_ca
    from rolesanywhere_hsm.errors import UsageError

    if key_type not in ("p256", "p384", "rsa2048", "rsa3072", "rsa4096"):
        raise UsageError(f"--key-type {key_type} is not offered.", hint="Use p256, p384, rsa2048, rsa3072 or rsa4096.")
    if not 1 <= days <= 3650:
        raise UsageError(f"--days {days} is out of range.", hint="Use 1..3650 days.")
    ca = CertificateAuthority.create(name, key_type, organization=None, days=days)
    cert_path, key_path = save_test_ca(ca, directory)
    print(f"{cert_path}\n{key_path}")
    typer.echo(f"rolesanywhere-hsm: {_WARNING}", err=True)


@devca_app.command("sign")
def sign(
    ca: Annotated[Path, typer.Option("--ca", metavar="DIR", help="The directory `dev-ca init` made.")],
    csr: Annotated[Path, typer.Option("--csr", metavar="FILE", help="The request `rolesanywhere-hsm csr` wrote (PEM or DER).")],
    out: Annotated[Path, typer.Option("--out", metavar="FILE", help="Where the certificate (PEM) goes.")],
    days: Annotated[int, typer.Option("--days", help="Validity in days (1..3650).")] = 365,
    require_attestation: Annotated[Path | None, typer.Option(
        "--require-attestation", metavar="ROOTS",
        help="Sign only a request whose key attestation (`csr --attest`) chains to these "
             "attestation roots (PEM); the certificate's subject then carries "
             "OU=attested-yubikey or OU=attested-tpm. A refusal exits 10.")] = None,
    debug: o.Debug = False,
) -> None:
    """Sign a certificate request with the TEST CA in DIR: an end-entity certificate (CA:FALSE,
    digitalSignature, SHA-256) with the request's subject and alternative names, as Roles
    Anywhere wants it. The request's signature is checked first; with --require-attestation,
    its key attestation too (docs/attestation.md)."""
    o.configure_logging(debug)
    from cryptography.hazmat.primitives import serialization

    from rolesanywhere_hsm._dev.devpki import load_test_ca, sign_request
    from rolesanywhere_hsm.errors import CertificateError
    from rolesanywhere_hsm.files import read_regular_file, write_atomic

    authority = load_test_ca(ca)
    request = read_regular_file(csr, what="certificate request", limit=1 << 20, error=CertificateError)
    if require_attestation is None:
        certificate = sign_request(authority, request, days=days)
    else:
        from rolesanywhere_hsm.attestation.ca import issue_attested
        from rolesanywhere_hsm.attestation.verify import load_certificates

        roots = load_certificates(read_regular_file(require_attestation, what="attestation roots", limit=1 << 22,
                                                    error=CertificateError), "--require-attestation")
        certificate = issue_attested(authority, request, roots, days=days)
    write_atomic(out, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
    print(out)


def register(app: typer.Typer) -> None:
    app.add_typer(devca_app, name="dev-ca")
