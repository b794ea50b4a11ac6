"""CLI: `keygen`, `csr` and `import-certificate`, from a blank token to a key with a certificate
(docs/onboarding.md). Each prints what the next step needs on stdout: a URI or a PEM."""

from __future__ import annotations

import sys
from enum import Enum
from typing import Annotated, Optional

import typer

from rolesanywhere_hsm.cli import options as o


class CsrDigest(str, Enum):
    sha256 = "sha256"
    sha384 = "sha384"


class KeyTypeChoice(str, Enum):
    ec_p256 = "ec-p256"
    ec_p384 = "ec-p384"
    rsa_2048 = "rsa-2048"
    rsa_3072 = "rsa-3072"
    rsa_4096 = "rsa-4096"


TokenUri = Annotated[
    str,
    typer.Option("--token", help="The token, as a pkcs11: URI (e.g. 'pkcs11:token=mytoken'; add "
                 "serial= or slot-id= when labels repeat, module-path= or --pkcs11-lib for the module)."),
]
ManagementKeySource = Annotated[
    Optional[str],
    typer.Option("--management-key-source",
                 help="PIV cards (YubiKey through ykcs11) only: where the card's management key "
                 "(48 hex digits) is read: file:/path, env:NAME or cmd:program args. No default "
                 "key is ever assumed.", envvar="RAH_PIV_MANAGEMENT_KEY_SOURCE"),
]
KeyUri = Annotated[
    str,
    typer.Option("--private-key", help="The key on the token, as the pkcs11: URI that keygen printed."),
]


def keygen(
    token: TokenUri,
    label: Annotated[str, typer.Option("--label", help="CKA_LABEL of the new key (must be unused).")],
    key_type: Annotated[KeyTypeChoice, typer.Option("--key-type", help="Key algorithm and size.")] = KeyTypeChoice.ec_p256,
    key_id: Annotated[
        Optional[str], typer.Option("--id", help="CKA_ID in hex (e.g. 01); default: 8 fresh random bytes.")
    ] = None,
    management_key_source: ManagementKeySource = None,
    pkcs11_lib: o.Pkcs11Lib = None,
    debug: o.Debug = False,
) -> None:
    """Generate a key pair inside the token (sensitive, never extractable, signing only) and
    print the new private key's pkcs11: URI."""
    o.configure_logging(debug)
    from rolesanywhere_hsm.provision.keygen import generate_key

    generated = generate_key(token, key_type.value, label, key_id, pkcs11_lib=pkcs11_lib,
                             management_key_source=management_key_source)
    print(generated.uri)


def csr(
    private_key: Annotated[
        str, typer.Option("--private-key", help="The key: a pkcs11: URI (as keygen printed) or a key file.")
    ],
    subject: Annotated[
        str, typer.Option("--subject", help="Subject as an RFC 4514 string, e.g. 'CN=workload-1,O=Example'.")
    ],
    san: Annotated[
        Optional[list[str]],
        typer.Option("--san", help="Subject alternative names: dns:NAME, uri:URI, email:ADDRESS, ip:ADDRESS; "
                     "comma-separated or repeated."),
    ] = None,
    out: Annotated[
        Optional[str], typer.Option("--out", help="Write the PEM request to this file (atomically) instead of stdout.")
    ] = None,
    digest: Annotated[
        CsrDigest, typer.Option("--digest", help="Hash of the request's signature: sha256, or sha384 for EC keys.")
    ] = CsrDigest.sha256,
    attest: Annotated[
        bool, typer.Option("--attest", help="Carry the key's attestation in the request (YubiKey PIV: "
                           "Yubico's certificates; TPM key file: a TPM2_Certify statement by --ak-handle); "
                           "exit 10 if the key cannot be attested. See docs/attestation.md.")
    ] = False,
    ak_handle: Annotated[
        Optional[str], typer.Option("--ak-handle", help="With --attest, TPM keys: the attestation key's persistent handle.")
    ] = None,
    ak_certificate: Annotated[
        Optional[str], typer.Option("--ak-certificate", help="With --attest, TPM keys: the AK's certificate chain (PEM).")
    ] = None,
    pkcs8_password: o.Pkcs8Password = None,
    pkcs11_lib: o.Pkcs11Lib = None,
    debug: o.Debug = False,
) -> None:
    """Print a PKCS#10 certificate request (PEM) signed by the key, for a CA to sign."""
    o.configure_logging(debug)
    from rolesanywhere_hsm.provision.csr import make_csr, to_pem

    extensions: list[tuple[str, bytes]] = []
    if attest:  # before any PIN is asked: a key that cannot be attested fails at once
        from rolesanywhere_hsm.attestation.collect import collect

        extensions = collect(private_key, pkcs11_lib=pkcs11_lib, ak_handle=ak_handle,
                             ak_certificate=ak_certificate).csr_extensions
    elif ak_handle is not None or ak_certificate is not None:
        from rolesanywhere_hsm.errors import UsageError

        raise UsageError("--ak-handle and --ak-certificate go with --attest.", hint="Add --attest.")
    pem = to_pem(make_csr(private_key, subject, san or (), pkcs11_lib=pkcs11_lib,
                          pkcs8_password=pkcs8_password, digest=digest.value,
                          extra_extensions=extensions))
    if out is None:
        sys.stdout.write(pem)
        return
    from rolesanywhere_hsm.files import write_atomic
    from rolesanywhere_hsm.errors import UsageError

    try:
        write_atomic(out, pem, mode=0o644)  # a request holds no secret
    except OSError as exc:
        from rolesanywhere_hsm.redact import redact

        raise UsageError(f"Cannot write --out {redact(out)}: {exc.strerror or exc}.",
                         hint="Check the directory exists and is writable.") from None


def import_certificate(
    private_key: KeyUri,
    certificate: Annotated[
        str, typer.Option("--certificate", help="The certificate the CA issued for the key (PEM or DER file).")
    ],
    chain: Annotated[
        Optional[str], typer.Option("--chain", help="PEM file of CA certificates to store on the token too.")
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace another certificate stored with the key's id (renewal).")
    ] = False,
    management_key_source: ManagementKeySource = None,
    pkcs11_lib: o.Pkcs11Lib = None,
    debug: o.Debug = False,
) -> None:
    """Store the certificate on the token with the key's id and label; print its pkcs11: URI
    (what credential-process --certificate takes)."""
    o.configure_logging(debug)
    from rolesanywhere_hsm.provision.store import import_certificate as store

    imported = store(private_key, certificate, chain, replace=replace, pkcs11_lib=pkcs11_lib,
                     management_key_source=management_key_source)
    if imported.already_present:
        print("rolesanywhere-hsm: the certificate was already on the token.", file=sys.stderr)
    print(imported.uri)


def register(app: typer.Typer) -> None:
    app.command("keygen")(keygen)
    app.command("csr")(csr)
    app.command("import-certificate")(import_certificate)
