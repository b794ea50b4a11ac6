"""PURE: how to make a Roles Anywhere signature with a token that offers some mechanisms.

Given the key type, its size or curve and the token's mechanism list, `choose_signing_spec`
returns a frozen `SigningSpec`: which mechanism to ask for, what to hand to C_Sign (the
message, its SHA-256, or a SHA-256 DigestInfo) and how to turn the token's output into wire
bytes. No token access happens here, so every branch is unit-tested without a token; the
PKCS#11 signer only executes the spec (docs/protocol.md section 3).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from rolesanywhere_hsm.errors import TokenSigningError
from rolesanywhere_hsm.record import Record

__all__ = [
    "CKM_ECDSA",
    "CKM_ECDSA_SHA256",
    "CKM_ML_DSA",
    "CKM_RSA_PKCS",
    "CKM_SHA256_RSA_PKCS",
    "SHA256_DIGEST_INFO_PREFIX",
    "SigningSpec",
    "choose_signing_spec",
    "ecdsa_raw_to_der",
    "spec_for_digest",
]

# PKCS#11 v2.40 section 2 (mechanism type values). Plain ints so that this module needs no
# python-pkcs11 import; pkcs11.Mechanism is an IntEnum and compares equal to them.
CKM_RSA_PKCS = 0x0001
CKM_SHA256_RSA_PKCS = 0x0040
CKM_SHA384_RSA_PKCS = 0x0041
CKM_SHA512_RSA_PKCS = 0x0042
CKM_ECDSA = 0x1041
CKM_ECDSA_SHA256 = 0x1044
CKM_ECDSA_SHA384 = 0x1045
CKM_ECDSA_SHA512 = 0x1046
# PKCS#11 3.2: pure ML-DSA (FIPS 204), the message itself to C_Sign; without a
# CK_SIGN_ADDITIONAL_CONTEXT parameter the context is empty, as AWS4-X509-MLDSA wants.
CKM_ML_DSA = 0x001D

_NAMES = {
    CKM_RSA_PKCS: "CKM_RSA_PKCS",
    CKM_SHA256_RSA_PKCS: "CKM_SHA256_RSA_PKCS",
    CKM_SHA384_RSA_PKCS: "CKM_SHA384_RSA_PKCS",
    CKM_SHA512_RSA_PKCS: "CKM_SHA512_RSA_PKCS",
    CKM_ECDSA: "CKM_ECDSA",
    CKM_ECDSA_SHA256: "CKM_ECDSA_SHA256",
    CKM_ECDSA_SHA384: "CKM_ECDSA_SHA384",
    CKM_ECDSA_SHA512: "CKM_ECDSA_SHA512",
    CKM_ML_DSA: "CKM_ML_DSA",
}

# RFC 8017 section 9.2, note 1: DER of DigestInfo{shaN, NULL} up to the hash bytes.
SHA256_DIGEST_INFO_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")
_DIGEST_INFO_PREFIXES = {
    "SHA256": SHA256_DIGEST_INFO_PREFIX,
    "SHA384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "SHA512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
# sign-string --digest: per digest, the mechanisms that hash on the token (RSA, EC).
_HASHING_MECHANISMS = {
    "SHA256": (CKM_SHA256_RSA_PKCS, CKM_ECDSA_SHA256),
    "SHA384": (CKM_SHA384_RSA_PKCS, CKM_ECDSA_SHA384),
    "SHA512": (CKM_SHA512_RSA_PKCS, CKM_ECDSA_SHA512),
}


class SigningSpec(Record):
    """How one signature is made.

    `hash_on_host`: C_Sign gets SHA-256(message) instead of the message.
    `digest_info`: that hash is wrapped in a SHA-256 DigestInfo first (CKM_RSA_PKCS only signs
    what it is given, so the host must build what CKM_SHA256_RSA_PKCS would have built).
    `raw_to_der`: the token returns ECDSA r||s (PKCS#11 section 2.3.1) and the wire wants DER.
    """

    __slots__ = ("key_type", "mechanism", "hash_on_host", "digest_info", "raw_to_der", "digest")
    _compared = __slots__
    key_type: str
    mechanism: int
    hash_on_host: bool
    digest_info: bool
    raw_to_der: bool
    digest: str  # the hash (RSA, EC); Roles Anywhere itself always uses SHA-256

    def __init__(self, key_type: str, mechanism: int, hash_on_host: bool, digest_info: bool,
                 raw_to_der: bool, digest: str = "SHA256") -> None:
        self._set(key_type=key_type, mechanism=mechanism, hash_on_host=hash_on_host, digest_info=digest_info,
                  raw_to_der=raw_to_der, digest=digest)

    @property
    def mechanism_name(self) -> str:
        return _NAMES.get(self.mechanism, hex(self.mechanism))

    def data_to_sign(self, message: bytes) -> bytes:
        """What C_Sign must receive for `message`."""
        if not self.hash_on_host:
            return message
        digest = hashlib.new(self.digest.lower(), message).digest()
        return _DIGEST_INFO_PREFIXES[self.digest] + digest if self.digest_info else digest

    def wire_signature(self, token_output: bytes) -> bytes:
        """The signature bytes Roles Anywhere expects, from what C_Sign returned."""
        return ecdsa_raw_to_der(token_output) if self.raw_to_der else token_output


def choose_signing_spec(
    key_type: str, mechanisms: Iterable[int], *, key_bits: int | None = None,
    curve: str | None = None, parameter_set: str | None = None,
) -> SigningSpec:
    """The spec for an RSA or EC key on a token offering `mechanisms`.

    RSA: CKM_SHA256_RSA_PKCS (the token hashes and pads), else CKM_RSA_PKCS over a DigestInfo
    built on the host. Never PSS: the service wants PKCS#1 v1.5. EC: SHA-256 on the host and
    CKM_ECDSA (SoftHSM and most PIV cards have no CKM_ECDSA_SHA256, and hashing 32 bytes on the
    host costs nothing), else CKM_ECDSA_SHA256 where that is all the token offers. ML-DSA:
    CKM_ML_DSA (PKCS#11 3.2) over the message itself, never HashML-DSA (the service verifies
    pure ML-DSA). `key_bits`, `curve` and `parameter_set` ("ML-DSA-65") only feed messages; the
    choice does not depend on them.
    """
    offered = set(int(m) for m in mechanisms)
    if key_type == "RSA":
        if CKM_SHA256_RSA_PKCS in offered:
            return SigningSpec("RSA", CKM_SHA256_RSA_PKCS, False, False, False)
        if CKM_RSA_PKCS in offered:
            return SigningSpec("RSA", CKM_RSA_PKCS, True, True, False)
        wanted = "CKM_SHA256_RSA_PKCS or CKM_RSA_PKCS"
        what = f"RSA-{key_bits}" if key_bits else "RSA"
    elif key_type == "EC":
        if CKM_ECDSA in offered:
            return SigningSpec("EC", CKM_ECDSA, True, False, True)
        if CKM_ECDSA_SHA256 in offered:
            return SigningSpec("EC", CKM_ECDSA_SHA256, False, False, True)
        wanted = "CKM_ECDSA or CKM_ECDSA_SHA256"
        what = f"EC {curve}" if curve else "EC"
    elif key_type == "ML-DSA":
        if CKM_ML_DSA in offered:
            return SigningSpec("ML-DSA", CKM_ML_DSA, False, False, False)
        raise TokenSigningError(
            f"The token offers no mechanism to sign with its {parameter_set or 'ML-DSA'} key "
            "(needs CKM_ML_DSA, a PKCS#11 3.2 mechanism).",
            hint="Use a module that implements PKCS#11 3.2 ML-DSA (check `pkcs11-tool "
            "--list-mechanisms`), or keep the ML-DSA key in a file.",
        )
    else:
        raise TokenSigningError(
            f"Roles Anywhere signing with a {key_type} key on a token is not supported.",
            hint="Use an RSA, EC (P-256, P-384) or ML-DSA key.",
        )
    raise TokenSigningError(
        f"The token offers no mechanism to sign with its {what} key (needs {wanted}).",
        hint="Check the token's mechanisms with `pkcs11-tool --list-mechanisms`.",
    )


def spec_for_digest(spec: SigningSpec, digest: str, mechanisms: Iterable[int]) -> SigningSpec:
    """`spec` with another hash (SHA256, SHA384, SHA512), for `sign-string --digest`, as the
    file signer's `sign_with_digest`: RSA with CKM_SHA384_RSA_PKCS / CKM_SHA512_RSA_PKCS when
    the token has it, else CKM_RSA_PKCS over a DigestInfo built on the host; EC with CKM_ECDSA
    over the hash made on the host, else CKM_ECDSA_SHA384 / _SHA512. ML-DSA takes no digest
    (pure ML-DSA signs the message): the spec is returned as it is."""
    if digest not in _DIGEST_INFO_PREFIXES:
        raise TokenSigningError(f"Unknown digest {digest!r}.", hint="Use SHA256, SHA384 or SHA512.")
    if spec.key_type == "ML-DSA" or digest == spec.digest:
        return spec
    offered = set(int(m) for m in mechanisms)
    rsa_mechanism, ec_mechanism = _HASHING_MECHANISMS[digest]
    if spec.key_type == "RSA":
        if rsa_mechanism in offered:
            return SigningSpec("RSA", rsa_mechanism, False, False, False, digest)
        if CKM_RSA_PKCS in offered:
            return SigningSpec("RSA", CKM_RSA_PKCS, True, True, False, digest)
        wanted = f"{_NAMES[rsa_mechanism]} or CKM_RSA_PKCS"
    else:
        if CKM_ECDSA in offered:
            return SigningSpec("EC", CKM_ECDSA, True, False, True, digest)
        if ec_mechanism in offered:
            return SigningSpec("EC", ec_mechanism, False, False, True, digest)
        wanted = f"CKM_ECDSA or {_NAMES[ec_mechanism]}"
    raise TokenSigningError(
        f"The token offers no mechanism to sign {digest} with its {spec.key_type} key (needs {wanted}).",
        hint="Leave --digest out: Roles Anywhere itself signs with SHA256.",
    )


def ecdsa_raw_to_der(raw: bytes) -> bytes:
    """PKCS#11 ECDSA output r||s (two equal halves) -> DER SEQUENCE{INTEGER r, INTEGER s}."""
    if not raw or len(raw) % 2:
        raise TokenSigningError(
            f"The token returned a {len(raw)}-byte ECDSA signature; r||s must have even length.",
            hint="The token or module misbehaves; try `pkcs11-tool --sign` to check it.",
        )
    half = len(raw) // 2
    body = _der_integer(raw[:half]) + _der_integer(raw[half:])
    return b"\x30" + _der_length(len(body)) + body


def _der_integer(magnitude: bytes) -> bytes:
    value = magnitude.lstrip(b"\x00") or b"\x00"
    if value[0] & 0x80:
        value = b"\x00" + value  # keep it positive
    return b"\x02" + _der_length(len(value)) + value


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded
