"""CLI: `attest` (the device proves where a key was born) and `verify-attestation` (what a CA
runs before it issues). docs/attestation.md; exit 10 when an attestation is missing or refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from rolesanywhere_hsm.cli import options as o

AkHandle = Annotated[
    Optional[str],
    typer.Option("--ak-handle", help="TPM keys: the persistent handle of the attestation key (AK) "
                 "that certifies the key, e.g. 0x81010002."),
]
AkCertificate = Annotated[
    Optional[str],
    typer.Option("--ak-certificate", help="TPM keys: the AK's certificate, then its CA chain (PEM)."),
]


def _write(out: str | None, text: str) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    from rolesanywhere_hsm.errors import UsageError
    from rolesanywhere_hsm.files import write_atomic

    try:
        write_atomic(out, text, mode=0o644)  # an attestation is public
    except OSError as exc:
        from rolesanywhere_hsm.redact import redact

        raise UsageError(f"Cannot write --out {redact(out)}: {exc.strerror or exc}.",
                         hint="Check the directory exists and is writable.") from None


def attest(
    private_key: Annotated[
        str, typer.Option("--private-key", help="The key: a pkcs11: URI of a PIV key, or a TSS2 TPM key file.")
    ],
    out: Annotated[Optional[str], typer.Option("--out", help="Write the attestation to this file instead of stdout.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print kind, facts and the attestation as JSON.")] = False,
    ak_handle: AkHandle = None,
    ak_certificate: AkCertificate = None,
    pkcs11_lib: o.Pkcs11Lib = None,
    debug: o.Debug = False,
) -> None:
    """Print the key's attestation: for a YubiKey PIV key the slot's attestation certificate
    and the f9 certificate (PEM, leaf first; no PIN needed); for a TPM key a TPM2_Certify
    statement by the AK (JSON, WebAuthn "tpm" fields). Exit 10 if the key cannot be attested
    (e.g. it was imported)."""
    o.configure_logging(debug)
    from rolesanywhere_hsm.attestation.collect import collect

    found = collect(private_key, pkcs11_lib=pkcs11_lib, ak_handle=ak_handle, ak_certificate=ak_certificate)
    if as_json:
        _write(out, json.dumps({"kind": found.kind, "facts": found.facts, "attestation": found.text},
                               indent=2) + "\n")
    else:
        _write(out, found.text)


def _policies(values: list[str] | None, known: tuple[str, ...], option: str) -> frozenset[str]:
    from rolesanywhere_hsm.errors import UsageError

    chosen = {v.strip().lower() for value in values or () for v in value.split(",") if v.strip()}
    unknown = sorted(chosen - set(known))
    if unknown:
        raise UsageError(f"{option} {', '.join(unknown)} is not a policy name.",
                         hint=f"Use one or more of {', '.join(known)} (comma-separated).")
    return frozenset(chosen)


def verify_attestation(
    roots: Annotated[str, typer.Option("--roots", help="PEM file of the trusted attestation roots "
                                       "(Yubico's PIV root CA, your TPM attestation CA).")],
    csr: Annotated[Optional[str], typer.Option("--csr", help="A certificate request made with csr --attest.")] = None,
    attestation: Annotated[
        Optional[str], typer.Option("--attestation", help="An attestation from `attest` (with --certificate).")
    ] = None,
    certificate: Annotated[
        Optional[str], typer.Option("--certificate", help="The certificate whose key --attestation is about.")
    ] = None,
    require_pin_policy: Annotated[
        Optional[list[str]], typer.Option("--require-pin-policy", help="YubiKey: accepted PIN policies, "
                                          "e.g. once,always (refuses keys usable without a PIN).")
    ] = None,
    require_touch_policy: Annotated[
        Optional[list[str]], typer.Option("--require-touch-policy", help="YubiKey: accepted touch "
                                          "policies, e.g. always,cached.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON (also when refused).")] = False,
    debug: o.Debug = False,
) -> None:
    """Check a key's attestation for a CA: it chains to --roots, it is for the request's (or
    certificate's) public key, and the key meets the policy (TPM: generated inside, never
    duplicable). Prints the facts; exit 0 only if every check passes, else exit 10 with the
    reason."""
    o.configure_logging(debug)
    from rolesanywhere_hsm.attestation import verify, yubico
    from rolesanywhere_hsm.errors import AttestationError, UsageError

    if (csr is None) == (attestation is None) or (attestation is not None) != (certificate is not None):
        raise UsageError("Give either --csr FILE, or --attestation FILE with --certificate FILE.",
                         hint="rolesanywhere-hsm verify-attestation --help")
    requirements = verify.Requirements(
        _policies(require_pin_policy, tuple(yubico.PIN_POLICIES.values()), "--require-pin-policy"),
        _policies(require_touch_policy, tuple(yubico.TOUCH_POLICIES.values()), "--require-touch-policy"))
    root_certificates = verify.load_certificates(_read(roots, "--roots"), "--roots")
    verdict = verify.Verdict("unknown")
    try:
        if csr is not None:
            verify.verify_csr(_read(csr, "--csr"), root_certificates, requirements, verdict=verdict)
        else:
            assert attestation is not None and certificate is not None
            data = _read(attestation, "--attestation")
            verdict.kind = "tpm" if data.lstrip().startswith(b"{") else "yubikey-piv"
            leaf = verify.load_certificates(_read(certificate, "--certificate"), "--certificate")[0]
            verify.verify_attestation_file(data, leaf, root_certificates, requirements, verdict=verdict)
    except AttestationError as exc:
        if as_json:
            print(json.dumps(verdict.as_dict(exc), indent=2))
        raise
    if as_json:
        print(json.dumps(verdict.as_dict(), indent=2))
        return
    print(f"attestation verified: {'YubiKey PIV' if verdict.kind == 'yubikey-piv' else 'TPM'} key")
    for name, value in verdict.facts.items():
        shown = " ".join(value) if isinstance(value, list) else value
        print(f"{name.replace('_', ' ')}: {shown if shown is not None else '(not attested)'}")
    print(f"checks passed: {', '.join(verdict.checks)}")


def _read(path: str, option: str) -> bytes:
    from rolesanywhere_hsm.errors import UsageError

    try:
        return Path(path).read_bytes()
    except OSError as exc:
        from rolesanywhere_hsm.redact import redact

        raise UsageError(f"Cannot read {option} {redact(path)}: {exc.strerror or exc}.") from None


def register(app: typer.Typer) -> None:
    app.command("attest")(attest)
    app.command("verify-attestation")(verify_attestation)
