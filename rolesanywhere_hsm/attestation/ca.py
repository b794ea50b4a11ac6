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
    """A leaf from `ca` (devpki.CertificateAuthority) for an attested request, made by the test
    CA's one signing function (devpki.sign_request: the request's signature checked, CA:FALSE,
    digitalSignature, its alternative names) with the subject the request's CN under the OU
    naming how the key was attested."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from rolesanywhere_hsm._dev.devpki import sign_request

    verdict = require_attested(csr_data, roots, requirements)
    csr = x509.load_pem_x509_csr(csr_data) if b"-----BEGIN" in csr_data else x509.load_der_x509_csr(csr_data)
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else "attested-workload"
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ATTESTED_OU[verdict.kind]),
                         x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return sign_request(ca, csr_data, days=days, subject=subject)
