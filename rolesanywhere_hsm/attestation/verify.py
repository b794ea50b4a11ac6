"""What a CA runs before it issues: is this attestation genuine, is it for this key, and does
the key meet the policy? Pure functions over parsed certificates and bytes (no token).

The checks, in order, each with its own error (docs/errors.md, exit 10):
1. the attestation chains, signature by signature, to one of the given roots (RAH-ATT-003);
   names are matched issuer to subject and every certificate must be inside its validity;
2. the attested public key is the request's (or certificate's) public key (RAH-ATT-004);
3. the facts meet the policy: PIN/touch policy for a YubiKey; for a TPM key fixedTPM,
   fixedParent and sensitiveDataOrigin (generated inside, never duplicable) (RAH-ATT-005).

Why a hand-made chain walk rather than a TLS path builder: attestation certificates are not
TLS certificates (Yubico's slot certificates carry no key usage, the f9 certificate may lack CA
extensions on older keys); what matters is that each signature verifies up to a trusted root.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rolesanywhere_hsm.attestation import yubico
from rolesanywhere_hsm.errors import (
    AttestationChainError,
    AttestationError,
    AttestationKeyMismatchError,
    AttestationPolicyError,
    AttestationUnavailableError,
)

__all__ = [
    "Requirements",
    "Verdict",
    "attestation_in_csr",
    "load_certificates",
    "verify_chain",
    "verify_piv",
]

_MAX_DEPTH = 6


@dataclass(frozen=True)
class Requirements:
    """What the CA demands beyond a genuine attestation: accepted PIN and touch policies
    (empty: any)."""

    pin_policies: frozenset[str] = frozenset()
    touch_policies: frozenset[str] = frozenset()


@dataclass
class Verdict:
    """The outcome for people and policy engines: `kind` ("yubikey-piv" or "tpm"), `facts`
    (serial, firmware, policies, or TPM attributes), `checks` passed in order."""

    kind: str
    facts: dict[str, Any] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)

    def as_dict(self, error: AttestationError | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": error is None, "kind": self.kind, "facts": self.facts,
                               "checks_passed": self.checks}
        if error is not None:
            out.update(reason=error.reason, code=error.code, message=error.message)
        return out


def load_certificates(data: bytes, what: str) -> list[Any]:
    """Every certificate of a PEM bundle (or one DER certificate)."""
    from cryptography import x509

    try:
        if b"-----BEGIN" in data:
            return list(x509.load_pem_x509_certificates(data))
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        from rolesanywhere_hsm.errors import CertificateError

        raise CertificateError(f"{what} holds no readable certificate (PEM or DER).") from None


def _subject(cert: Any) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def verify_chain(leaf: Any, intermediates: Sequence[Any], roots: Sequence[Any],
                 now: dt.datetime | None = None) -> list[Any]:
    """The path leaf -> ... -> a root, each signature verified; raises AttestationChainError
    saying where it broke (a bad signature is a tampered or forged attestation; a missing
    issuer is an attestation from a device or CA the roots do not cover)."""
    from cryptography.exceptions import InvalidSignature

    now = now or dt.datetime.now(dt.timezone.utc)
    root_ders = {r.public_bytes(_der()) for r in roots}
    path = [leaf]
    current = leaf
    for _ in range(_MAX_DEPTH):
        _check_validity(current, now)
        if current.public_bytes(_der()) in root_ders:
            return path
        candidates = [c for c in (*intermediates, *roots)
                      if c.subject == current.issuer and c is not current]
        if not candidates:
            raise AttestationChainError(
                f"The attestation does not chain to the given roots: no certificate for "
                f"{current.issuer.rfc4514_string()!r}, the issuer of {_subject(current)!r}.",
                hint="Give the root that issued the device's attestation key (Yubico's PIV root "
                "CA, your TPM attestation CA) with --roots.")
        issuer = None
        for candidate in candidates:
            try:
                current.verify_directly_issued_by(candidate)
            except (InvalidSignature, ValueError, TypeError):
                continue
            issuer = candidate
            break
        if issuer is None:
            raise AttestationChainError(
                f"The signature on {_subject(current)!r} does not verify with the key of its "
                f"issuer {current.issuer.rfc4514_string()!r}: the attestation was altered or forged.",
                hint="Ask for a fresh attestation from the device; never edit one.")
        if issuer.public_bytes(_der()) in root_ders:
            _check_validity(issuer, now)
            return [*path, issuer]
        path.append(issuer)
        current = issuer
    raise AttestationChainError("The attestation chain is longer than 6 certificates.")


def _der() -> Any:
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER


def _check_validity(cert: Any, now: dt.datetime) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise AttestationChainError(
            f"The attestation certificate {_subject(cert)!r} is not valid now (valid "
            f"{cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}).",
            hint="Check the clock; an expired attestation certificate needs a new device or key.")


def spki_of(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import PublicFormat

    return public_key.public_bytes(_der(), PublicFormat.SubjectPublicKeyInfo)


def verify_piv(attestation: Any, intermediate: Any, public_key_info: bytes, roots: Sequence[Any],
               requirements: Requirements = Requirements(), *, subject: str = "the request",
               verdict: Verdict | None = None) -> Verdict:
    """Check a YubiKey slot attestation (leaf) and its f9 certificate against `roots`, the
    request's SubjectPublicKeyInfo and the requirements; fills and returns the verdict."""
    verdict = verdict or Verdict("yubikey-piv")
    verdict.kind = "yubikey-piv"
    facts = yubico.facts_of(attestation)
    verdict.facts = facts.as_dict()
    verify_chain(attestation, [intermediate], roots)
    verdict.checks.append("chain")
    if spki_of(attestation.public_key()) != public_key_info:
        slot = f" (slot {facts.slot})" if facts.slot else ""
        raise AttestationKeyMismatchError(
            f"The attestation is for another key{slot} than the public key of {subject}.",
            hint="Attest the key that signed the request: csr --attest with the same --private-key.")
    verdict.checks.append("public-key")
    _require("PIN policy", facts.pin_policy, requirements.pin_policies)
    _require("touch policy", facts.touch_policy, requirements.touch_policies)
    verdict.checks.append("policy")
    return verdict


def _require(what: str, value: str | None, accepted: Iterable[str]) -> None:
    accepted = sorted(accepted)
    if accepted and value not in accepted:
        raise AttestationPolicyError(
            f"The key's {what} is {value or 'not attested'}; the CA requires {' or '.join(accepted)}.",
            hint=f"Generate a key with a {what} of {accepted[0]} and request again.")


def attestation_in_csr(csr: Any) -> tuple[str, dict[str, bytes]]:
    """("yubikey-piv", {"attestation": DER, "intermediate": DER}) or ("tpm", {"statement":
    JSON bytes}) from a request's extensionRequest; AttestationUnavailableError if none."""
    from cryptography import x509

    from rolesanywhere_hsm.attestation import tpm_format

    found: dict[str, bytes] = {}
    try:
        extensions = csr.extensions
    except (ValueError, x509.DuplicateExtension) as exc:
        raise AttestationChainError(f"The request's extensions cannot be read ({exc}).") from None
    for extension in extensions:
        if isinstance(extension.value, x509.UnrecognizedExtension):
            found[extension.oid.dotted_string] = extension.value.value
    leaf = found.get(yubico.OID_CSR_ATTESTATION) or found.get(yubico.OID_CSR_ATTESTATION_LEGACY)
    if leaf is not None:
        intermediate = found.get(yubico.OID_CSR_INTERMEDIATE)
        if intermediate is None:
            raise AttestationChainError("The request carries a YubiKey attestation but not the f9 "
                                        f"certificate ({yubico.OID_CSR_INTERMEDIATE}).",
                                        hint="Make the request with `rolesanywhere-hsm csr --attest`.")
        return "yubikey-piv", {"attestation": leaf, "intermediate": intermediate}
    statement = found.get(tpm_format.OID_CSR_TPM_STATEMENT)
    if statement is not None:
        return "tpm", {"statement": statement}
    raise AttestationUnavailableError(
        "The request carries no key attestation.",
        hint="Make it with `rolesanywhere-hsm csr --attest` on a YubiKey or TPM key.")


def verify_tpm(statement: bytes, public_key_info: bytes, roots: Sequence[Any], *,
               subject: str = "the request", verdict: Verdict | None = None) -> Verdict:
    """Check a TPM statement (tpm_format): the AK's chain to `roots`, the AK's signature over
    certInfo, that certInfo certifies exactly pubArea, that pubArea's key is the request's, and
    that its attributes say generated inside and never duplicable."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding

    from rolesanywhere_hsm.attestation import tpm_format

    verdict = verdict or Verdict("tpm")
    verdict.kind = "tpm"
    try:
        fields = tpm_format.parse_statement(statement)
        public = tpm_format.parse_public(fields["pubArea"])
        attest = tpm_format.parse_attest(fields["certInfo"])
        certificates = [x509.load_der_x509_certificate(c) for c in fields["x5c"]]
    except ValueError as exc:
        raise AttestationChainError(f"The TPM attestation statement cannot be read: {exc}.") from None
    if not certificates:
        raise AttestationChainError("The TPM attestation statement carries no AK certificate (x5c).")
    ak = certificates[0]
    verdict.facts = {
        "attributes": public.attribute_names,
        "name_alg": tpm_format.HASHES.get(public.name_alg, hex(public.name_alg)),
        "ak": _subject(ak),
        "firmware": f"{attest.firmware_version:016x}",
    }
    verify_chain(ak, certificates[1:], roots)
    verdict.checks.append("chain")
    scheme = tpm_format.COSE_ALGORITHMS.get(fields["alg"])
    if scheme is None:
        raise AttestationChainError(f"The statement's signature algorithm {fields['alg']} is not supported.")
    digest = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}[scheme[1]]
    try:
        key = ak.public_key()
        if scheme[0] == "ecdsa":
            key.verify(fields["sig"], fields["certInfo"], ec.ECDSA(digest))
        else:
            key.verify(fields["sig"], fields["certInfo"], padding.PKCS1v15(), digest)
    except (InvalidSignature, TypeError, AttributeError):
        raise AttestationChainError(
            f"The AK's signature over the TPM statement does not verify with {_subject(ak)!r}: "
            "the statement was altered or not made by that AK.",
            hint="Ask for a fresh attestation (rolesanywhere-hsm attest); never edit one.") from None
    if attest.magic != tpm_format.TPM_GENERATED_VALUE or attest.type != tpm_format.TPM_ST_ATTEST_CERTIFY:
        raise AttestationChainError("The signed TPM structure is not a TPM2_Certify made by a TPM "
                                    "(magic or type differ).")
    if attest.attested_name != tpm_format.object_name(fields["pubArea"]):
        raise AttestationChainError("The TPM certified another object than the statement's pubArea: "
                                    "the statement was altered.")
    verdict.checks.append("signature")
    if spki_of(public.public_key) != public_key_info:
        raise AttestationKeyMismatchError(
            f"The TPM attestation is for another key than the public key of {subject}.",
            hint="Attest the key that signed the request: csr --attest with the same key.")
    verdict.checks.append("public-key")
    missing = public.missing()
    if missing:
        said = ("imported into the TPM, not generated inside it" if "sensitiveDataOrigin" in missing
                else "duplicable out of this TPM")
        raise AttestationPolicyError(
            f"The TPM says the key was {said} ({', '.join(missing)} not set; attributes: "
            f"{' '.join(public.attribute_names)}).",
            hint="Generate the key inside the TPM with fixedTPM|fixedParent|sensitiveDataOrigin "
            "(rolesanywhere-hsm keygen, tpm2_create).")
    verdict.checks.append("attributes")
    return verdict


def _csr_public_key_info(csr: Any) -> bytes:
    return spki_of(csr.public_key())


def verify_csr(data: bytes, roots: Sequence[Any], requirements: Requirements = Requirements(),
               *, verdict: Verdict | None = None) -> Verdict:
    """The CA's one call: the request's own signature, then its attestation (PIV or TPM).
    Raises an AttestationError (exit 10) for the first check that fails."""
    from cryptography import x509

    try:
        csr = (x509.load_pem_x509_csr(data) if b"-----BEGIN" in data else x509.load_der_x509_csr(data))
    except ValueError:
        from rolesanywhere_hsm.errors import UsageError

        raise UsageError("--csr is not a PKCS#10 certificate request (PEM or DER).") from None
    if not csr.is_signature_valid:
        raise AttestationKeyMismatchError(
            "The request's own signature does not verify: it was altered after signing, or "
            "signed by another key than the one it names.", hint="Make a new request.")
    kind, parts = attestation_in_csr(csr)
    spki = _csr_public_key_info(csr)
    if kind == "yubikey-piv":
        try:
            leaf = x509.load_der_x509_certificate(parts["attestation"])
            intermediate = x509.load_der_x509_certificate(parts["intermediate"])
        except ValueError:
            raise AttestationChainError("The request's YubiKey attestation is not a certificate.") from None
        return verify_piv(leaf, intermediate, spki, roots, requirements, verdict=verdict)
    _no_piv_requirements(requirements)
    return verify_tpm(parts["statement"], spki, roots, verdict=verdict)


def _no_piv_requirements(requirements: Requirements) -> None:
    if requirements.pin_policies or requirements.touch_policies:
        raise AttestationPolicyError(
            "PIN and touch policies are attested by YubiKeys only; this is a TPM attestation.",
            hint="Leave --require-pin-policy and --require-touch-policy out for TPM keys.")


def verify_attestation_file(data: bytes, certificate: Any, roots: Sequence[Any],
                            requirements: Requirements = Requirements(), *,
                            verdict: Verdict | None = None) -> Verdict:
    """`verify-attestation --attestation FILE --certificate FILE`: a PEM bundle from `attest`
    (YubiKey: slot attestation first, then f9) or a TPM statement (JSON), for the key of an
    issued certificate."""
    spki = spki_of(certificate.public_key())
    if data.lstrip().startswith(b"{"):
        _no_piv_requirements(requirements)
        return verify_tpm(data, spki, roots, subject="the certificate", verdict=verdict)
    certificates = load_certificates(data, "--attestation")
    if len(certificates) < 2:
        raise AttestationChainError("The attestation bundle needs the slot's attestation certificate "
                                    "and the f9 certificate (leaf first), as `attest` writes it.")
    return verify_piv(certificates[0], certificates[1], spki, roots, requirements,
                      subject="the certificate", verdict=verdict)
