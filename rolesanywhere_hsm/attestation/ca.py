"""The test CA's "attested requests only" rule, for `dev-ca sign --require-attestation` and the
end-to-end tests: verify the request's attestation, then issue a certificate whose subject says
so (OU=attested-yubikey or OU=attested-tpm), which is what Roles Anywhere sees and a trust
policy can test (aws:PrincipalTag/x509Subject/OU). Only a CA that checks attestation may issue
that OU: docs/attestation.md, "What Roles Anywhere sees".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rolesanywhere_hsm.attestation.verify import Requirements, Verdict, verify_csr

__all__ = ["ATTESTED_OU", "issue_attested", "require_attested"]

ATTESTED_OU = {"yubikey-piv": "attested-yubikey", "tpm": "attested-tpm"}


def require_attested(csr_data: bytes, roots: Sequence[Any],
                     requirements: Requirements = Requirements()) -> Verdict:
    """The verdict for a request that passes every attestation check; otherwise the
    AttestationError (exit 10) of the first failed check, an unattested request included."""
    return verify_csr(csr_data, roots, requirements)


def issue_attested(ca: Any, csr_data: bytes, roots: Sequence[Any],
                   requirements: Requirements = Requirements(), *, days: int = 365) -> Any:
    """A leaf from `ca` (devpki.CertificateAuthority) for an attested request: the request's
    CN, and the OU naming how the key was attested."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    verdict = require_attested(csr_data, roots, requirements)
    csr = x509.load_pem_x509_csr(csr_data) if b"-----BEGIN" in csr_data else x509.load_der_x509_csr(csr_data)
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else "attested-workload"
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ATTESTED_OU[verdict.kind]),
                                 x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
