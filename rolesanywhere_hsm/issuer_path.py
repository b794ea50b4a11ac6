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
from typing import Any

from rolesanywhere_hsm.errors import CertificateError
from rolesanywhere_hsm.record import Record
from rolesanywhere_hsm.x509 import MAX_CHAIN

__all__ = ["IssuerPath", "build_issuer_path"]


class IssuerPath(Record):
    """`intermediates` to send, nearest the leaf first; `root` the self-signed certificate
    the walk ended on, if any (never sent); `subjects` the names along the path, for --debug."""

    _compared = ("intermediates", "root", "subjects")
    __slots__ = _compared

    intermediates: tuple[bytes, ...]
    root: bytes | None
    subjects: tuple[str, ...]

    def __init__(self, intermediates: tuple[bytes, ...], root: bytes | None, subjects: tuple[str, ...]) -> None:
        self._set(intermediates=intermediates, root=root, subjects=subjects)


# Parsing (names, key identifiers, CA flags) is asn1crypto's, which the token path loads anyway;
# `cryptography` is imported only to verify a signature, i.e. only when the token holds a CA
# certificate whose name and key identifier make it a candidate issuer (a token with the leaf
# alone, the common case, never loads it: about 50 ms of a cold run).

def _parsed(der: bytes) -> Any:
    from asn1crypto import x509

    cert = x509.Certificate.load(der)
    cert.native  # noqa: B018 (parse it all now: a malformed candidate is skipped, not fatal later)
    return cert


def _key_identifier(cert: Any, authority: bool) -> bytes | None:
    try:
        return cert.authority_key_identifier if authority else cert.key_identifier
    except ValueError:
        return None


def _is_ca(cert: Any) -> bool:
    try:
        return bool(cert.ca)
    except ValueError:
        return False


def _issued_by(cert: Any, issuer: Any) -> bool:
    """The issuer's key verifies the certificate's signature, and the names chain (cryptography
    checks both; the caller has matched the names already)."""
    from cryptography import x509

    try:
        x509.load_der_x509_certificate(cert.dump()).verify_directly_issued_by(
            x509.load_der_x509_certificate(issuer.dump()))
    except Exception:  # noqa: BLE001 (InvalidSignature, ValueError, TypeError: not the issuer)
        return False
    return True


def _is_self_signed(cert: Any) -> bool:
    return cert.subject == cert.issuer and _issued_by(cert, cert)


def _name(cert: Any) -> str:
    """The subject as RFC 4514 writes it (most specific first), for --debug."""
    parts = []
    for rdn in reversed(cert.subject.chosen):
        parts.append("+".join(f"{_SHORT.get(a['type'].native, a['type'].dotted)}={a['value'].native}"
                              for a in rdn))
    return ",".join(parts)


_SHORT = {"common_name": "CN", "organization_name": "O", "organizational_unit_name": "OU",
          "country_name": "C", "state_or_province_name": "ST", "locality_name": "L",
          "domain_component": "DC", "user_id": "UID", "street_address": "STREET"}


def build_issuer_path(leaf: bytes, candidates: Iterable[bytes],
                      max_intermediates: int = MAX_CHAIN) -> IssuerPath:
    """Walk from `leaf` up through the CA certificates among `candidates` (see the module
    docstring). Raises CertificateError when the path needs more than `max_intermediates`."""
    current = _parsed(leaf)
    pool = []
    for der in dict.fromkeys(candidates):
        if der == leaf:
            continue
        try:
            cert = _parsed(der)
        except ValueError:
            continue
        if _is_ca(cert):
            pool.append((der, cert))
    path: list[bytes] = []
    subjects: list[str] = []
    root = None
    used = {leaf}
    while pool:
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
            subjects.append(_name(cert) + " (root, not sent)")
            break
        path.append(der)
        subjects.append(_name(cert))
        current = cert
    if len(path) > max_intermediates:
        raise CertificateError(
            f"The issuer path on the token has {len(path)} intermediates; Roles Anywhere accepts "
            f"at most {max_intermediates}.",
            hint="Register an intermediate CA as the trust anchor, or give --intermediates.",
        )
    return IssuerPath(tuple(path), root, tuple(subjects))
