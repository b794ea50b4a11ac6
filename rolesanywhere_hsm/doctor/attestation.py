"""doctor's attestation check (`--attestation-roots FILE`): does the key's hardware prove it was
generated inside, by a device the roots stand for, and is it the certificate's key? The same
checks as `verify-attestation`, on the key doctor just opened."""

from __future__ import annotations

from rolesanywhere_hsm.doctor.checks import FAIL, PASS, SKIP, Check, Run, from_error
from rolesanywhere_hsm.errors import RolesAnywhereError

__all__ = ["attestation_check"]

NAME = "attestation"


def attestation_check(run: Run) -> None:
    roots_path = run.options.attestation_roots
    if roots_path is None or run.skip_unless(NAME, "key"):
        return
    from rolesanywhere_hsm.signers.base import signer_kind

    config = run.options.signer
    kind = signer_kind(config)
    if kind == "tpmkey":
        run.add(Check(NAME, SKIP, "a TPM key is attested by an AK: run `rolesanywhere-hsm attest "
                      "--ak-handle ... --ak-certificate ...` and verify-attestation"))
        return
    if kind != "pkcs11":
        run.add(Check(NAME, FAIL, "a private key file in software cannot be attested",
                      "Generate the key in a YubiKey or a TPM (rolesanywhere-hsm keygen).",
                      code="RAH-ATT-002"))
        return
    try:
        from pathlib import Path

        from cryptography import x509

        from rolesanywhere_hsm.attestation import piv, verify

        roots = verify.load_certificates(Path(roots_path).read_bytes(), "--attestation-roots")
        key_uri = config.private_key or config.certificate or ""
        found = piv.attest_piv_key(key_uri, pkcs11_lib=config.pkcs11_lib, environ=run.environ)
        certificate = x509.load_der_x509_certificate(run.signer.certificate)
        verdict = verify.verify_piv(found.attestation, found.intermediate,
                                    verify.spki_of(certificate.public_key()), roots,
                                    subject="the certificate")
    except OSError as exc:
        run.add(Check(NAME, FAIL, f"cannot read --attestation-roots: {exc.strerror or exc}"))
        return
    except RolesAnywhereError as exc:
        run.add(from_error(NAME, exc))
        return
    facts = verdict.facts
    run.add(Check(NAME, PASS, f"YubiKey serial {facts['serial']}, slot {facts['slot']}, PIN policy "
                  f"{facts['pin_policy']}, touch policy {facts['touch_policy']}: generated on the card, "
                  "attested by a device the roots cover"))
