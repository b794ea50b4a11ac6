"""TPM 2.0 key attestation as data: TPMT_PUBLIC, TPMS_ATTEST and our statement file, no I/O.

The statement is the WebAuthn "tpm" attestation statement (W3C WebAuthn level 2, 8.3) with its
fields unchanged and CBOR swapped for JSON (base64 for byte strings), because step-ca, WebAuthn
servers and their reviewers already know these fields and how to check them:

    {"fmt": "tpm",
     "attStmt": {"ver": "2.0",
                 "alg": -7,              # COSE algorithm of sig: -7 ES256, -257 RS256, -35 ES384
                 "x5c": ["<AK cert DER>", "<its CA chain, leaf first>", ...],
                 "sig": "<signature over certInfo, X.509 form (DER ECDSA / PKCS#1 v1.5)>",
                 "certInfo": "<TPMS_ATTEST from TPM2_Certify>",
                 "pubArea": "<TPMT_PUBLIC of the attested key>"}}

What differs from WebAuthn: there is no authenticator data, so certInfo.extraData is empty (or a
CA's nonce) rather than a hash over it, and the statement says nothing about freshness. In a
certificate request it travels as the extension 2.25.319063195431296546655562390566376265888 (an
OID under the UUID arc, X.667, minted for this purpose) in extensionRequest; its value is the
JSON, UTF-8.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ATTRIBUTE_BITS",
    "OID_CSR_TPM_STATEMENT",
    "TpmAttest",
    "TpmPublic",
    "parse_attest",
    "parse_public",
    "parse_statement",
    "statement_json",
]

OID_CSR_TPM_STATEMENT = "2.25.319063195431296546655562390566376265888"

TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_CERTIFY = 0x8017
ALG_RSA, ALG_ECC, ALG_NULL = 0x0001, 0x0023, 0x0010
HASHES = {0x0004: "sha1", 0x000B: "sha256", 0x000C: "sha384", 0x000D: "sha512"}
CURVES = {0x0003: "secp256r1", 0x0004: "secp384r1", 0x0005: "secp521r1"}

# TPMA_OBJECT (TPM 2.0 part 2, 8.3).
ATTRIBUTE_BITS = {
    "fixedTPM": 1 << 1, "stClear": 1 << 2, "fixedParent": 1 << 4, "sensitiveDataOrigin": 1 << 5,
    "userWithAuth": 1 << 6, "adminWithPolicy": 1 << 7, "noDA": 1 << 10,
    "encryptedDuplication": 1 << 11, "restricted": 1 << 16, "decrypt": 1 << 17, "sign": 1 << 18,
}
# Generated inside this TPM and never duplicable to another: what "cannot be copied" means.
REQUIRED_ATTRIBUTES = ("fixedTPM", "fixedParent", "sensitiveDataOrigin")

# COSE algorithm identifiers (RFC 9053, RFC 8812) of the AK's signature.
COSE_ALGORITHMS = {-7: ("ecdsa", "sha256"), -35: ("ecdsa", "sha384"), -36: ("ecdsa", "sha512"),
                   -257: ("pkcs1", "sha256"), -258: ("pkcs1", "sha384"), -259: ("pkcs1", "sha512")}


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated TPM structure")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def sized(self) -> bytes:
        return self.take(self.u16())


@dataclass(frozen=True)
class TpmPublic:
    type: int
    name_alg: int
    attributes: int
    public_key: Any  # cryptography public key

    @property
    def attribute_names(self) -> list[str]:
        return [name for name, bit in ATTRIBUTE_BITS.items() if self.attributes & bit]

    def missing(self) -> list[str]:
        return [name for name in REQUIRED_ATTRIBUTES if not self.attributes & ATTRIBUTE_BITS[name]]


def parse_public(data: bytes) -> TpmPublic:
    """TPMT_PUBLIC of an RSA or ECC key (TPM 2.0 part 2, 12.2.4)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    r = _Reader(data)
    kind, name_alg, attributes = r.u16(), r.u16(), r.u32()
    r.sized()  # authPolicy
    if r.u16() != ALG_NULL:  # symmetric: keyBits, mode
        r.take(4)
    if r.u16() != ALG_NULL:  # scheme: its hash
        r.take(2)
    if kind == ALG_RSA:
        r.u16()  # keyBits
        exponent = r.u32() or 65537
        modulus = int.from_bytes(r.sized(), "big")
        key: Any = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    elif kind == ALG_ECC:
        curve = CURVES.get(r.u16())
        if r.u16() != ALG_NULL:  # kdf: its hash
            r.take(2)
        x, y = int.from_bytes(r.sized(), "big"), int.from_bytes(r.sized(), "big")
        if curve is None:
            raise ValueError("unsupported TPM curve")
        key = ec.EllipticCurvePublicNumbers(x, y, getattr(ec, curve.upper())()).public_key()
    else:
        raise ValueError(f"TPM key type {kind:#06x} is neither RSA nor ECC")
    if r.pos != len(data):
        raise ValueError("trailing bytes after TPMT_PUBLIC")
    return TpmPublic(kind, name_alg, attributes, key)


def object_name(public_area: bytes) -> bytes:
    """The TPM name of an object: nameAlg || H_nameAlg(TPMT_PUBLIC)."""
    name_alg = struct.unpack(">H", public_area[2:4])[0]
    hash_name = HASHES.get(name_alg)
    if hash_name is None:
        raise ValueError("unknown nameAlg")
    return struct.pack(">H", name_alg) + hashlib.new(hash_name, public_area).digest()


@dataclass(frozen=True)
class TpmAttest:
    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    firmware_version: int
    attested_name: bytes


def parse_attest(data: bytes) -> TpmAttest:
    """TPMS_ATTEST of a TPM2_Certify (TPM 2.0 part 2, 10.12.12)."""
    r = _Reader(data)
    magic, kind = r.u32(), r.u16()
    signer, extra = r.sized(), r.sized()
    r.u64(), r.u32(), r.u32(), r.take(1)  # clockInfo
    firmware = r.u64()
    name = r.sized() if kind == TPM_ST_ATTEST_CERTIFY else b""
    return TpmAttest(magic, kind, signer, extra, firmware, name)


def statement_json(*, alg: int, x5c: list[bytes], sig: bytes, cert_info: bytes, pub_area: bytes) -> bytes:
    def b64(value: bytes) -> str:
        return base64.b64encode(value).decode("ascii")

    return json.dumps({"fmt": "tpm", "attStmt": {
        "ver": "2.0", "alg": alg, "x5c": [b64(c) for c in x5c], "sig": b64(sig),
        "certInfo": b64(cert_info), "pubArea": b64(pub_area)}}, indent=1).encode() + b"\n"


def parse_statement(data: bytes) -> dict[str, Any]:
    """The statement's fields with byte strings decoded; ValueError if it is not one."""
    try:
        outer = json.loads(data)
        if outer.get("fmt") != "tpm":
            raise ValueError("fmt is not tpm")
        stmt = outer["attStmt"]
        if stmt.get("ver") != "2.0":
            raise ValueError("ver is not 2.0")
        return {"alg": int(stmt["alg"]), "x5c": [base64.b64decode(c, validate=True) for c in stmt["x5c"]],
                "sig": base64.b64decode(stmt["sig"], validate=True),
                "certInfo": base64.b64decode(stmt["certInfo"], validate=True),
                "pubArea": base64.b64decode(stmt["pubArea"], validate=True)}
    except (KeyError, TypeError, AttributeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a TPM attestation statement ({exc})") from None
