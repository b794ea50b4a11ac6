"""The issuer path of a leaf among CA certificates found beside it (on the same token).

HSM partitions and smart cards often hold the issuing CA certificates next to the leaf. The
official helper sends every certificate on the token as the chain; we send only the path:
each step's issuer is chosen by name (subject = issuer), by key identifier when the
certificate has an authority key identifier (AKI = the issuer's SKI), and only if the
issuer's key verifies the certificate's signature. The walk stops at a self-signed root (not
sent: the trust anchor has it) or when nothing issues the last certificate; unrelated CA
certificates are never sent. Roles Anywhere takes at most 5 intermediates in X-Amz-X509-Chain.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rolesanywhere_hsm.errors import CertificateError
from rolesanywhere_hsm.x509 import MAX_CHAIN

__all__ = ["IssuerPath", "build_issuer_path"]


@dataclass(frozen=True)
class IssuerPath:
    """`intermediates` to send, nearest the leaf first; `root` the self-signed certificate
    the walk ended on, if any (never sent); `subjects` the names along the path, for --debug."""

    intermediates: tuple[bytes, ...]
    root: bytes | None
    subjects: tuple[str, ...]


def _key_identifier(cert: Any, authority: bool) -> bytes | None:
    from cryptography import x509

    try:
        if authority:
            return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (x509.ExtensionNotFound, ValueError):
        return None


def _is_ca(cert: Any) -> bool:
    from cryptography import x509

    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


def _issued_by(cert: Any, issuer: Any) -> bool:
    """Names chain and the issuer's key verifies the signature (cryptography checks both)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # noqa: BLE001 (InvalidSignature, ValueError, TypeError: not the issuer)
        return False
    return True


def _is_self_signed(cert: Any) -> bool:
    return cert.subject == cert.issuer and _issued_by(cert, cert)


def build_issuer_path(leaf: bytes, candidates: Iterable[bytes],
                      max_intermediates: int = MAX_CHAIN) -> IssuerPath:
    """Walk from `leaf` up through the CA certificates among `candidates` (see the module
    docstring). Raises CertificateError when the path needs more than `max_intermediates`."""
    from cryptography import x509

    current = x509.load_der_x509_certificate(leaf)
    pool = []
    for der in dict.fromkeys(candidates):
        if der == leaf:
            continue
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            continue
        if _is_ca(cert):
            pool.append((der, cert))
    path: list[bytes] = []
    subjects: list[str] = []
    root = None
    used = {leaf}
    while True:
        named = [(d, c) for d, c in pool if d not in used and c.subject == current.issuer]
        aki = _key_identifier(current, authority=True)
        if aki is not None:  # prefer the issuer whose SKI is the AKI; others only if none has it
            by_key = [(d, c) for d, c in named if _key_identifier(c, authority=False) == aki]
            named = by_key or [(d, c) for d, c in named if _key_identifier(c, authority=False) is None]
        issuer = next(((d, c) for d, c in named if _issued_by(current, c)), None)
        if issuer is None:
            break
        der, cert = issuer
        used.add(der)
        if _is_self_signed(cert):
            root = der
            subjects.append(cert.subject.rfc4514_string() + " (root, not sent)")
            break
        path.append(der)
        subjects.append(cert.subject.rfc4514_string())
        current = cert
    if len(path) > max_intermediates:
        raise CertificateError(
            f"The issuer path on the token has {len(path)} intermediates; Roles Anywhere accepts "
            f"at most {max_intermediates}.",
            hint="Register an intermediate CA as the trust anchor, or give --intermediates.",
        )
    return IssuerPath(tuple(path), root, tuple(subjects))
