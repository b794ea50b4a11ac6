"""Certificates on the client side: load PEM/DER, read serial and key type, order a chain.

Parsing uses asn1crypto, which imports in a few milliseconds, so `credential-process` with a
token key never pays for `cryptography`. Verification belongs to the emulator, not here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from asn1crypto import pem as _pem
from asn1crypto import x509 as _x509

from rolesanywhere_hsm.errors import CertificateError
from rolesanywhere_hsm.signers.base import ALGORITHM_ECDSA, ALGORITHM_RSA

__all__ = [
    "MAX_CHAIN",
    "CertificateInfo",
    "algorithm_for_key_type",
    "certificate_data",
    "certificate_info",
    "ensure_leaf_usable",
    "load_certificates",
    "order_chain",
    "parse_certificates",
]

# docs/protocol.md section 3: at most 5 intermediates in X-Amz-X509-Chain.
MAX_CHAIN = 5

_PEM_CERT = re.compile(rb"-----BEGIN (?:X509 |TRUSTED )?CERTIFICATE-----")


@dataclass(frozen=True)
class CertificateInfo:
    der: bytes
    serial: int
    key_type: str  # "RSA" or "EC"
    subject: str
    issuer: str
    public_key_info: bytes  # SubjectPublicKeyInfo, DER: compare these to pair keys and certs
    curve: str | None  # "secp256r1", ... for EC
    key_bits: int
    is_ca: bool
    subject_raw: bytes
    issuer_raw: bytes

    @property
    def algorithm(self) -> str:
        return algorithm_for_key_type(self.key_type)


def algorithm_for_key_type(key_type: str) -> str:
    if key_type == "RSA":
        return ALGORITHM_RSA
    if key_type == "EC":
        return ALGORITHM_ECDSA
    raise CertificateError(
        f"Roles Anywhere does not accept {key_type} keys.",
        hint="Use an RSA (2048 bits or more) or an EC P-256/P-384 key.",
    )


def parse_certificates(data: bytes, source: str = "input") -> list[bytes]:
    """Every certificate in `data` (PEM, possibly several, or one DER), as DER; at least one
    or a CertificateError."""
    if _PEM_CERT.search(data):
        ders = []
        for type_name, _headers, der in _pem.unarmor(data, multiple=True):
            if type_name in ("CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"):
                ders.append(der)
        if not ders:
            raise CertificateError(f"{source} holds no certificate.", hint="Give a PEM or DER certificate file.")
        return ders
    if data.lstrip().startswith(b"-----BEGIN"):
        raise CertificateError(f"{source} holds no PEM certificate.", hint="Give a certificate file.")
    try:
        _x509.Certificate.load(data).native  # noqa: B018 (forces a full parse)
    except Exception:
        raise CertificateError(
            f"{source} is not a certificate (neither PEM nor DER).",
            hint="Give an X.509 certificate file in PEM or DER form.",
        ) from None
    return [data]


def load_certificates(path: str | Path) -> list[bytes]:
    """Certificates from a file, as DER; at least one or a CertificateError."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CertificateError(
            f"Cannot read the certificate file {path}: {exc.strerror or exc}.",
            hint="Check the path and its permissions.",
        ) from None
    return parse_certificates(data, source=str(path))


def certificate_info(der: bytes) -> CertificateInfo:
    try:
        cert = _x509.Certificate.load(der)
        tbs = cert["tbs_certificate"]
        spki = tbs["subject_public_key_info"]
        algo = spki["algorithm"]["algorithm"].native
        if algo == "rsa":
            key_type, curve = "RSA", None
        elif algo == "ec":
            key_type, curve = "EC", spki["algorithm"]["parameters"].chosen.native
        else:  # ed25519, dsa, ...: parsed so that the error can name them
            key_type, curve = algo.upper(), None
        return CertificateInfo(
            der=der,
            serial=tbs["serial_number"].native,
            key_type=key_type,
            subject=cert.subject.human_friendly,
            issuer=cert.issuer.human_friendly,
            public_key_info=spki.dump(),
            curve=curve,
            key_bits=spki.bit_size if key_type in ("RSA", "EC") else 0,
            is_ca=bool(cert.ca),
            subject_raw=cert.subject.dump(),
            issuer_raw=cert.issuer.dump(),
        )
    except CertificateError:
        raise
    except Exception as exc:
        raise CertificateError(
            f"The certificate cannot be parsed: {exc}", hint="Check that it is an X.509 certificate."
        ) from None


def order_chain(leaf: bytes, candidates: Iterable[bytes]) -> tuple[bytes, ...]:
    """The intermediates that link `leaf` upward, nearest first.

    Only certificates that are on the issuer path are kept (a bundle may hold unrelated CAs),
    and self-signed roots are dropped: the service has them in the trust anchor. A bundle that
    is not a path (e.g. two intermediates for two different leaves) loses what is off-path,
    which is exactly what the official helper gets wrong by sending every token certificate.
    """
    infos = {c: certificate_info(c) for c in dict.fromkeys(candidates) if c != leaf}
    by_subject: dict[bytes, list[CertificateInfo]] = {}
    for info in infos.values():
        by_subject.setdefault(info.subject_raw, []).append(info)
    path: list[bytes] = []
    current = certificate_info(leaf)
    seen = {leaf}
    while True:
        issuers = [i for i in by_subject.get(current.issuer_raw, []) if i.der not in seen]
        if not issuers:
            break
        issuer = issuers[0]
        if issuer.subject_raw == issuer.issuer_raw:  # a root: the anchor has it
            break
        path.append(issuer.der)
        seen.add(issuer.der)
        current = issuer
    if len(path) > MAX_CHAIN:
        raise CertificateError(
            f"The chain has {len(path)} intermediates; Roles Anywhere accepts at most {MAX_CHAIN}.",
            hint="Register an intermediate CA as the trust anchor to shorten the chain.",
        )
    return tuple(path)


def certificate_data(der: bytes) -> dict[str, object]:
    """The JSON that `read-certificate-data` prints, as the official helper prints it."""
    import base64

    info = certificate_info(der)
    prefix = {"RSA": "RSA", "EC": "ECDSA"}.get(info.key_type, info.key_type)
    return {
        "keyType": info.key_type,
        "certificateData": base64.b64encode(der).decode("ascii"),
        "serialNumber": str(info.serial),
        "supportedAlgorithms": [f"{prefix}SHA{bits}" for bits in (256, 384, 512)],
    }


def ensure_leaf_usable(info: CertificateInfo, chain: Sequence[bytes] = ()) -> None:
    """Refuse early what the service would refuse anyway, with a clearer message."""
    if info.is_ca:
        raise CertificateError(
            f"The certificate for {info.subject or 'an empty subject'} is a CA certificate; "
            "Roles Anywhere needs an end-entity certificate.",
            hint="Pass the workload's own certificate with --certificate.",
        )
    algorithm_for_key_type(info.key_type)
