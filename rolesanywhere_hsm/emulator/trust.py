"""Whether a signing certificate is trusted: the leaf's own requirements, a PKIX path to a
trust anchor's CA certificate, and revocation by the anchor's imported CRLs (docs/protocol.md
section 4, items 3 to 5).

The path is built by hand rather than with `cryptography.x509.verification`: that verifier
applies the Web PKI profile (with cryptography 48 its client verifier refuses a leaf without a
subjectAltName, and it has rules on EKU, key types and CA extensions), which refuses
certificates that Roles Anywhere takes, such as those from small private CAs or a YubiKey's
self-made PKI. Every signature is still checked by `cryptography`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtensionOID

from rolesanywhere_hsm.emulator.rejections import untrusted_certificate
from rolesanywhere_hsm.emulator.resources import TrustAnchor

__all__ = ["MAX_PATH_INTERMEDIATES", "build_path", "check_leaf", "check_not_revoked", "leaf_problems"]

# docs/protocol.md section 4: the chain header carries at most 5 certificates, so no path is longer.
MAX_PATH_INTERMEDIATES = 5
_STRONG_HASHES = (
    hashes.SHA256, hashes.SHA384, hashes.SHA512,
    hashes.SHA3_256, hashes.SHA3_384, hashes.SHA3_512,
)


def _within_validity(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _extension(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None


def _strong_signature_hash(cert: x509.Certificate) -> bool:
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return False  # MD2, MD4 and friends: unknown to cryptography, certainly weak
    # None means a signature scheme with its own hash (Ed25519, Ed448, ML-DSA): strong.
    return algorithm is None or isinstance(algorithm, _STRONG_HASHES)


def leaf_problems(leaf: x509.Certificate, now: dt.datetime) -> list[tuple[str, str]]:
    """Every leaf requirement of section 4 item 3 that `leaf` breaks, as (rule, detail), in
    the order the service checks them. Rules: "version", "extensions", "ca", "key-usage",
    "weak-hash", "validity", "subject". The emulator refuses on the first; `doctor` reports
    them all (one set of rules for both)."""
    problems: list[tuple[str, str]] = []
    if leaf.version != x509.Version.v3:
        problems.append(("version", "leaf is not an X.509 v3 certificate"))
    try:
        constraints = _extension(leaf, ExtensionOID.BASIC_CONSTRAINTS)
        usage = _extension(leaf, ExtensionOID.KEY_USAGE)
    except (ValueError, x509.DuplicateExtension) as exc:
        problems.append(("extensions", f"leaf extensions do not parse: {exc}"))
        constraints = usage = None
    if isinstance(constraints, x509.BasicConstraints) and constraints.ca:
        problems.append(("ca", "leaf is a CA certificate (basicConstraints CA true)"))
    if isinstance(usage, x509.KeyUsage) and not usage.digital_signature:
        problems.append(("key-usage", "leaf keyUsage lacks digitalSignature"))
    if not _strong_signature_hash(leaf):
        problems.append(("weak-hash", "leaf is signed with a weak hash (MD5 or SHA-1)"))
    if not _within_validity(leaf, now):
        problems.append((
            "validity",
            f"leaf is outside its validity ({leaf.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} .. "
            f"{leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ})",
        ))
    if len(leaf.subject) == 0:
        problems.append(("subject", "leaf has an empty subject"))
    return problems


def check_leaf(leaf: x509.Certificate, now: dt.datetime) -> None:
    """The leaf's own requirements (section 4 item 3); raises Rejection on the first broken."""
    problems = leaf_problems(leaf, now)
    if problems:
        raise untrusted_certificate(problems[0][1])


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _usable_ca(cert: x509.Certificate, now: dt.datetime, below: int) -> str | None:
    """Why `cert` cannot issue in a path with `below` intermediates under it, or None."""
    if not _within_validity(cert, now):
        return "outside its validity"
    constraints = _extension(cert, ExtensionOID.BASIC_CONSTRAINTS)
    if not isinstance(constraints, x509.BasicConstraints) or not constraints.ca:
        return "not a CA (basicConstraints CA not true)"
    if constraints.path_length is not None and below > constraints.path_length:
        return f"pathLenConstraint {constraints.path_length} exceeded"
    usage = _extension(cert, ExtensionOID.KEY_USAGE)
    if isinstance(usage, x509.KeyUsage) and not usage.key_cert_sign:
        return "keyUsage lacks keyCertSign"
    if not _strong_signature_hash(cert) and not _self_signed(cert):
        # A self-signed anchor's own signature protects nothing; any other CA's does.
        return "signed with a weak hash"
    return None


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and _issued_by(cert, cert)


def build_path(
    leaf: x509.Certificate,
    chain: Sequence[x509.Certificate],
    anchor: TrustAnchor,
    now: dt.datetime,
) -> list[x509.Certificate]:
    """A path [leaf, intermediates..., anchor certificate], or a Rejection saying why none.

    Chain certificates may come in any order; each is used at most once. The path ends at the
    first certificate that belongs to the anchor's bundle, root or not.
    """
    reasons: list[str] = []
    anchor_certs = list(anchor.certificates)

    def extend(path: list[x509.Certificate]) -> list[x509.Certificate] | None:
        tip = path[-1]
        below = len(path) - 1  # intermediates under the next issuer
        for ca in anchor_certs:
            if _issued_by(tip, ca):
                why = _usable_ca(ca, now, below)
                if why is None:
                    return [*path, ca]
                reasons.append(f"anchor certificate {ca.subject.rfc4514_string()} is {why}")
        if below >= MAX_PATH_INTERMEDIATES:
            return None
        for ca in chain:
            if any(ca is used for used in path) or not _issued_by(tip, ca):
                continue
            why = _usable_ca(ca, now, below)
            if why is not None:
                reasons.append(f"chain certificate {ca.subject.rfc4514_string()} is {why}")
                continue
            found = extend([*path, ca])
            if found:
                return found
        return None

    found = extend([leaf])
    if found is None:
        detail = "; ".join(dict.fromkeys(reasons)) or (
            f"no path from issuer {leaf.issuer.rfc4514_string()} to trust anchor {anchor.arn}"
        )
        raise untrusted_certificate(detail)
    return found


def check_not_revoked(path: Sequence[x509.Certificate], anchor: TrustAnchor) -> None:
    """Refuse when the anchor's imported CRLs revoke the leaf or an intermediate.

    A CRL counts for a certificate when its issuer name is the certificate's issuer and its
    signature verifies with that issuer's key; an out-of-date CRL still counts (the service
    keeps using what was imported, it never fetches).
    """
    for cert, issuer in zip(path, path[1:]):
        for crl in anchor.crls:
            if crl.issuer != cert.issuer:
                continue
            try:
                if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                    continue
            except (TypeError, UnsupportedAlgorithm):
                continue
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                raise untrusted_certificate(
                    f"certificate serial {cert.serial_number:x} is revoked by an imported CRL"
                )
