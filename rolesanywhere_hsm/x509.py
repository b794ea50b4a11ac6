"""Certificates on the client side: load PEM/DER, read serial and key type, order a chain.

Parsing uses asn1crypto, which imports in a few milliseconds, so `credential-process` with a
token key never pays for `cryptography`. Verification belongs to the emulator, not here.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from asn1crypto import core as _core
from asn1crypto import keys as _keys
from asn1crypto import pem as _pem
from asn1crypto import x509 as _x509

from rolesanywhere_hsm.errors import CertificateError
from rolesanywhere_hsm.record import Record
from rolesanywhere_hsm.sigv4x509 import ALGORITHM_ECDSA, ALGORITHM_MLDSA, ALGORITHM_RSA

if TYPE_CHECKING:
    from pathlib import Path  # only named in a type: a cold run loads no pathlib

__all__ = [
    "MAX_CHAIN",
    "ML_DSA_OIDS",
    "CertificateInfo",
    "algorithm_for_key_type",
    "certificate_data",
    "certificate_info",
    "ensure_current",
    "load_certificates",
    "order_chain",
    "parse_certificates",
    "public_key_type",
    "verify_signature",
]

# docs/protocol.md section 3: at most 5 intermediates in X-Amz-X509-Chain.
MAX_CHAIN = 5

_PEM_CERT = re.compile(rb"-----BEGIN (?:X509 |TRUSTED )?CERTIFICATE-----")

# FIPS 204 / RFC 9881 public key algorithm identifiers (no parameters) -> parameter set.
ML_DSA_OIDS = {
    "2.16.840.1.101.3.4.3.17": "ML-DSA-44",
    "2.16.840.1.101.3.4.3.18": "ML-DSA-65",
    "2.16.840.1.101.3.4.3.19": "ML-DSA-87",
}


class _AnyPublicKeyInfo(_core.Sequence):
    """SubjectPublicKeyInfo with the key left as bytes: asn1crypto's own PublicKeyInfo raises
    KeyError on algorithms it does not know (ML-DSA), even to read the algorithm's OID."""

    _fields = [("algorithm", _keys.PublicKeyAlgorithm), ("public_key", _core.OctetBitString)]


class CertificateInfo(Record):
    """What we read from a certificate. A frozen `Record` rather than a dataclass: one class
    fewer made through `dataclasses` on a cold `credential-process` (docs/performance.md)."""

    __slots__ = ("der", "serial", "key_type", "subject", "issuer", "public_key_info", "curve", "key_bits",
                 "is_ca", "subject_raw", "issuer_raw", "parameter_set", "not_before", "not_after")
    _compared = __slots__
    der: bytes
    serial: int
    key_type: str  # "RSA", "EC" or "ML-DSA"
    subject: str
    issuer: str
    public_key_info: bytes  # SubjectPublicKeyInfo, DER: compare these to pair keys and certs
    curve: str | None  # "secp256r1", ... for EC
    key_bits: int
    is_ca: bool
    subject_raw: bytes
    issuer_raw: bytes
    parameter_set: str | None  # "ML-DSA-44", "ML-DSA-65", "ML-DSA-87" for ML-DSA
    not_before: dt.datetime | None  # aware, UTC
    not_after: dt.datetime | None

    def __init__(self, *, der: bytes, serial: int, key_type: str, subject: str, issuer: str,
                 public_key_info: bytes, curve: str | None, key_bits: int, is_ca: bool,
                 subject_raw: bytes, issuer_raw: bytes, parameter_set: str | None = None,
                 not_before: dt.datetime | None = None, not_after: dt.datetime | None = None) -> None:
        self._set(der=der, serial=serial, key_type=key_type, subject=subject, issuer=issuer,
                  public_key_info=public_key_info, curve=curve, key_bits=key_bits, is_ca=is_ca,
                  subject_raw=subject_raw, issuer_raw=issuer_raw, parameter_set=parameter_set,
                  not_before=not_before, not_after=not_after)

    @property
    def algorithm(self) -> str:
        return algorithm_for_key_type(self.key_type)


def algorithm_for_key_type(key_type: str) -> str:
    if key_type == "RSA":
        return ALGORITHM_RSA
    if key_type == "EC":
        return ALGORITHM_ECDSA
    if key_type == "ML-DSA":
        return ALGORITHM_MLDSA
    raise CertificateError(
        f"Roles Anywhere does not accept {key_type} keys.",
        hint="Use an RSA (2048 bits or more), an EC P-256/P-384 or an ML-DSA-44/65/87 key.",
    )


def parse_certificates(data: bytes, source: str = "input") -> list[bytes]:
    """Every certificate in `data` (PEM, possibly several, or one DER), as DER; at least one
    or a CertificateError."""
    if _PEM_CERT.search(data):
        ders = []
        try:
            for type_name, _headers, der in _pem.unarmor(data, multiple=True):
                if type_name in ("CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"):
                    ders.append(der)
        except ValueError:  # a block without its END line, or a body that is not base64
            from rolesanywhere_hsm.redact import redact

            raise CertificateError(
                f"{redact(source)} holds a damaged PEM block (cut short, or not base64 inside).",
                hint="Copy the certificate again, from -----BEGIN to -----END.",
            ) from None
        if not ders:
            raise CertificateError(f"{source} holds no certificate.", hint="Give a PEM or DER certificate file.")
        return ders
    if data.lstrip().startswith(b"-----BEGIN"):
        raise CertificateError(f"{source} holds no PEM certificate.", hint="Give a certificate file.")
    try:
        certificate_info(data)  # a full parse of what we use; .native would choke on ML-DSA keys
    except Exception:
        raise CertificateError(
            f"{source} is not a certificate (neither PEM nor DER).",
            hint="Give an X.509 certificate file in PEM or DER form.",
        ) from None
    return [data]


def load_certificates(path: str | Path) -> list[bytes]:
    """Certificates from a file, as DER; at least one or a CertificateError."""
    from rolesanywhere_hsm.files import CERTIFICATE_LIMIT, read_regular_file

    data = read_regular_file(path, what="certificate", limit=CERTIFICATE_LIMIT, error=CertificateError)
    return parse_certificates(data, source=str(path))


def certificate_info(der: bytes) -> CertificateInfo:
    try:
        cert = _x509.Certificate.load(der)
        tbs = cert["tbs_certificate"]
        spki_der = tbs["subject_public_key_info"].dump()
        oid = _AnyPublicKeyInfo.load(spki_der)["algorithm"]["algorithm"]
        parameter_set = ML_DSA_OIDS.get(oid.dotted)
        if parameter_set:
            key_type, curve, bits = "ML-DSA", None, 0
        else:
            spki = _keys.PublicKeyInfo.load(spki_der)
            algo = oid.native
            if algo == "rsa":
                key_type, curve = "RSA", None
            elif algo == "ec":
                key_type, curve = "EC", spki["algorithm"]["parameters"].chosen.native
            else:  # ed25519, dsa, ...: parsed so that the error can name them
                key_type, curve = algo.upper(), None
            bits = spki.bit_size if key_type in ("RSA", "EC") else 0
        return CertificateInfo(
            der=der,
            serial=tbs["serial_number"].native,
            key_type=key_type,
            subject=cert.subject.human_friendly,
            issuer=cert.issuer.human_friendly,
            public_key_info=spki_der,
            curve=curve,
            key_bits=bits,
            is_ca=bool(cert.ca),
            subject_raw=cert.subject.dump(),
            issuer_raw=cert.issuer.dump(),
            parameter_set=parameter_set,
            not_before=tbs["validity"]["not_before"].native,
            not_after=tbs["validity"]["not_after"].native,
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


# read-certificate-data's keyType and supportedAlgorithms, as the official helper names them
# ("EC", "ECSHA256", not "ECDSA..."). ML-DSA is our choice (the official 1.8.0 prints an empty
# keyType for it): "MLDSA" like the AWS4-X509-MLDSA algorithm, and one algorithm, since pure
# ML-DSA signs the message itself and takes no separate digest.
_KEY_TYPE_NAMES = {"RSA": "RSA", "EC": "EC", "ML-DSA": "MLDSA"}


def certificate_data(der: bytes) -> dict[str, object]:
    """The JSON that `read-certificate-data` prints, as the official helper prints it."""
    import base64

    info = certificate_info(der)
    key_type = _KEY_TYPE_NAMES.get(info.key_type, "")
    algorithms = (
        [key_type] if info.key_type == "ML-DSA" else [f"{key_type}SHA{bits}" for bits in (256, 384, 512)]
    )
    return {
        "keyType": key_type,
        "certificateData": base64.b64encode(der).decode("ascii"),
        "serialNumber": str(info.serial),
        "supportedAlgorithms": algorithms,
    }


def ensure_current(info: CertificateInfo, now: dt.datetime | None = None, *,
                   refuse_future: bool = True) -> None:
    """PURE (given `now`): refuse a certificate outside its validity, which the service would
    refuse as "Untrusted signing certificate", naming the date that is wrong. Needs neither the
    network nor a PIN. `refuse_future=False` lets a not-yet-valid one through (storing a
    renewal ahead of its start is fine; signing with it is not)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    who = info.subject or "an empty subject"
    if info.not_after is not None and now > info.not_after:
        raise CertificateError(
            f"The certificate for {who} (serial {info.serial:x}) expired on "
            f"{info.not_after:%Y-%m-%d %H:%M:%S}Z (not after); Roles Anywhere refuses it.",
            hint="Renew it (a new certificate for the same key works: csr, then "
            "import-certificate --replace); `rolesanywhere-hsm doctor` shows its dates.")
    if refuse_future and info.not_before is not None and now < info.not_before:
        raise CertificateError(
            f"The certificate for {who} (serial {info.serial:x}) is not valid before "
            f"{info.not_before:%Y-%m-%d %H:%M:%S}Z (not before); Roles Anywhere refuses it until "
            "then.",
            hint="Check this machine's clock, or wait until the certificate is valid.")


def public_key_type(key: Any) -> str:
    """"RSA", "EC", "ML-DSA" for a `cryptography` public key, else its class name (for
    messages)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC"
    if type(key).__name__.startswith("MLDSA"):  # cryptography >= 47 only; no import needed
        return "ML-DSA"
    return type(key).__name__


def verify_signature(key: Any, message: bytes, signature: bytes, algorithm: str | None = None) -> bool:
    """Whether `signature` over `message` verifies as Roles Anywhere checks a request's
    signature (docs/protocol.md section 3): RSA PKCS#1 v1.5 with SHA-256, ECDSA with SHA-256
    whatever the curve (DER-encoded r, s only), pure ML-DSA with an empty context.

    `key` is a certificate (DER bytes) or a `cryptography` public key (the emulator passes the
    one it parsed itself). With `algorithm` (AWS4-X509-...), a key of another type is False.
    The one place the final check lives: the emulator, the PKCS#11 signer's pairing check and
    `doctor` all call it.
    """
    from cryptography import x509 as cx509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding

    try:
        if isinstance(key, (bytes, bytearray, memoryview)):
            key = cx509.load_der_x509_certificate(bytes(key)).public_key()
        key_type = public_key_type(key)
        if key_type not in ("RSA", "EC", "ML-DSA"):
            return False
        if algorithm is not None and algorithm != algorithm_for_key_type(key_type):
            return False
        if key_type == "RSA":
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        elif key_type == "EC":
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(signature, message)  # pure ML-DSA, empty context
    except (InvalidSignature, ValueError, UnsupportedAlgorithm):
        return False
    return True
