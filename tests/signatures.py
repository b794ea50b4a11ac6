"""One way for every test to check a signature in wire encoding against a certificate:
PKCS#1 v1.5 for RSA, DER ECDSA for EC, SHA-256 as Roles Anywhere uses (docs/protocol.md section 3)."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa


def verify_signature(certificate: x509.Certificate | bytes, message: bytes, signature: bytes) -> None:
    """Raise InvalidSignature unless `signature` is the certificate's key's over `message`."""
    cert: Any = x509.load_der_x509_certificate(certificate) if isinstance(certificate, bytes) else certificate
    public_key = cert.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
