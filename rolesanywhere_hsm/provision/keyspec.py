"""PURE: the key types `keygen` offers, CKA_ID rules, and public keys as SubjectPublicKeyInfo.

Everything here works on plain values (names, bytes, ints), so it is tested without a token.
The token code reads raw attributes (CKA_MODULUS, CKA_EC_POINT...) and hands them here.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rolesanywhere_hsm.errors import TokenError, UsageError

__all__ = [
    "GENERATE_MECHANISMS",
    "KEY_TYPES",
    "MAX_KEY_ID_BYTES",
    "KeySpec",
    "check_generation",
    "is_piv_card",
    "parse_management_key",
    "piv_slot",
    "ec_point_from_attribute",
    "ec_spki",
    "new_key_id",
    "parse_key_id",
    "parse_key_type",
    "public_key_description",
    "rsa_spki",
    "same_public_key",
]

# CKA_ID is an arbitrary byte string; tools show it in hex and some cards cap it. 8 random
# bytes are short enough to read in a URI and make a collision with an existing id unlikely.
NEW_KEY_ID_BYTES = 8
MAX_KEY_ID_BYTES = 64


@dataclass(frozen=True)
class KeySpec:
    """One `--key-type`: RSA with a modulus size, or EC on a named curve."""

    name: str
    key_type: str  # "RSA" or "EC"
    bits: int
    curve: str | None = None  # asn1crypto's name of the named curve, e.g. "secp256r1"

    @property
    def field_bytes(self) -> int:
        return (self.bits + 7) // 8


KEY_TYPES: dict[str, KeySpec] = {
    spec.name: spec
    for spec in (
        KeySpec("ec-p256", "EC", 256, "secp256r1"),
        KeySpec("ec-p384", "EC", 384, "secp384r1"),
        KeySpec("rsa-2048", "RSA", 2048),
        KeySpec("rsa-3072", "RSA", 3072),
        KeySpec("rsa-4096", "RSA", 4096),
    )
}


def parse_key_type(name: str) -> KeySpec:
    try:
        return KEY_TYPES[name.strip().lower()]
    except KeyError:
        raise UsageError(
            f"Unknown key type {name!r}.",
            hint=f"Use one of: {', '.join(KEY_TYPES)} (Roles Anywhere takes RSA and EC P-256/P-384).",
        ) from None


# PKCS#11 v2.40 section 2: CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_EC_KEY_PAIR_GEN (plain ints: no
# python-pkcs11 import here).
GENERATE_MECHANISMS = {"RSA": 0x0000, "EC": 0x1040}
_GENERATE_NAMES = {"RSA": "CKM_RSA_PKCS_KEY_PAIR_GEN", "EC": "CKM_EC_KEY_PAIR_GEN"}


def check_generation(spec: KeySpec, offered: Iterable[int], size_range: tuple[int, int] | None,
                     token_label: str) -> None:
    """Refuse, naming the missing capability, a key the token's mechanisms cannot make.
    `size_range` is the mechanism's (ulMinKeySize, ulMaxKeySize) in bits; (0, 0) or None
    when the module does not say."""
    if GENERATE_MECHANISMS[spec.key_type] not in set(offered):
        raise TokenError(
            f"The token {token_label!r} cannot generate {spec.key_type} keys (its module offers "
            f"no {_GENERATE_NAMES[spec.key_type]} mechanism).",
            hint="Generate the key with the token's own tool, then use csr and import-certificate "
            "(docs/onboarding.md); or choose another --key-type.",
        )
    if size_range is None:
        return
    low, high = size_range
    if high and not low <= spec.bits <= high:
        raise TokenError(
            f"The token {token_label!r} generates {spec.key_type} keys of {low} to {high} bits, "
            f"not {spec.bits} ({spec.name}).",
            hint="Choose a --key-type the token supports.",
        )


def is_piv_card(library_manufacturer: str, token_manufacturer: str) -> bool:
    """Whether a token is a PIV card (YubiKey through ykcs11, any PIV card through OpenSC):
    fixed key slots written with the card's management key, not the user PIN."""
    return (library_manufacturer.strip().startswith("Yubico")
            or token_manufacturer.strip() == "piv_II")


# ykcs11 logs the security officer in with the management key as 48 hex digits (3DES, the
# only length ykcs11 2.2 accepts there).
MANAGEMENT_KEY_HEX_DIGITS = (48,)


def parse_management_key(text: str) -> str:
    """The management key from its source (hex, spaces and colons allowed) as ykcs11 wants
    it: lowercase hex. Errors never quote the value: it is a secret."""
    cleaned = "".join(text.split()).replace(":", "").lower()
    try:
        bytes.fromhex(cleaned)
        valid = len(cleaned) in MANAGEMENT_KEY_HEX_DIGITS
    except ValueError:
        valid = False
    if not valid:
        raise UsageError(
            f"The management key from --management-key-source is not {MANAGEMENT_KEY_HEX_DIGITS[0]} "
            f"hex digits (it has {len(cleaned)} characters; its value is not shown).",
            hint="Give the card's 3DES management key in hex, on the first line of the file or "
            "in the variable.",
        )
    return cleaned


# PIV slots as CKA_IDs in ykcs11 (and OpenSC): 01..04 are 9a, 9c, 9d, 9e; 05..18 the
# retired key management slots 82..95.
PIV_SLOT_IDS = {bytes([1]): "9a", bytes([2]): "9c", bytes([3]): "9d", bytes([4]): "9e",
                **{bytes([5 + i]): f"{0x82 + i:02x}" for i in range(20)}}


def piv_slot(key_id: bytes | None) -> str:
    """The PIV slot that `--id` names on a PIV card (required there: slots are fixed)."""
    if key_id is None or key_id not in PIV_SLOT_IDS:
        raise UsageError(
            "On a PIV card --id names the key slot: 01 = 9a (PIV Authentication), 02 = 9c, "
            "03 = 9d, 04 = 9e, 05..18 = retired slots 82..95.",
            hint="Give e.g. --id 01 for slot 9a.",
        )
    return PIV_SLOT_IDS[key_id]


def parse_key_id(text: str) -> bytes:
    """`--id` as hex ("01", "a1b2", "0x01", "a1:b2" or the URI form "%a1%b2") -> bytes.

    Hex, never text: tpm2_ptool stores `--id=01` as the two characters "01", and a later
    `id=%01` then misses the key; we always mean the byte 0x01."""
    cleaned = text.strip().lower()
    cleaned = cleaned.removeprefix("0x").replace(":", "").replace("%", "")
    try:
        value = bytes.fromhex(cleaned)
    except ValueError:
        value = b""
    if not value or len(value) > MAX_KEY_ID_BYTES:
        from rolesanywhere_hsm.redact import redact

        raise UsageError(
            f"--id {redact(text)!r} is not a key id in hex.",
            hint=f"Give 1 to {MAX_KEY_ID_BYTES} bytes in hex, e.g. --id 01 or --id a1b2c3d4.",
        )
    return value


def new_key_id(in_use: Callable[[bytes], bool],
               random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> bytes:
    """A fresh CKA_ID that `in_use` says no object on the token has."""
    for _ in range(16):
        candidate = random_bytes(NEW_KEY_ID_BYTES)
        if not in_use(candidate):
            return candidate
    raise TokenError("No unused key id found after 16 random tries.",
                     hint="Give one with --id.")  # only a token that says every id is taken


def rsa_spki(modulus: int | bytes, exponent: int | bytes) -> bytes:
    """SubjectPublicKeyInfo DER of an RSA key (CKA_MODULUS, CKA_PUBLIC_EXPONENT are big-endian)."""
    from asn1crypto import keys

    n = int.from_bytes(modulus, "big") if isinstance(modulus, bytes) else modulus
    e = int.from_bytes(exponent, "big") if isinstance(exponent, bytes) else exponent
    return keys.PublicKeyInfo.wrap(keys.RSAPublicKey({"modulus": n, "public_exponent": e}), "rsa").dump()


def _curve_field_bytes(ec_params: bytes) -> tuple[str, int]:
    from asn1crypto import keys

    try:
        params = keys.ECDomainParameters.load(ec_params)
        if params.name != "named":
            raise ValueError("not a named curve")
        curve = params.chosen.native
        bits = {"secp256r1": 256, "secp384r1": 384, "secp521r1": 521}[curve]
    except (ValueError, KeyError, TypeError):
        raise TokenError(
            "The key's CKA_EC_PARAMS do not name a curve this tool knows (P-256, P-384, P-521).",
            hint="Use a P-256 or P-384 key.",
        ) from None
    return curve, (bits + 7) // 8


def ec_point_from_attribute(value: bytes, field_bytes: int) -> bytes:
    """The uncompressed point from CKA_EC_POINT: PKCS#11 says a DER OCTET STRING holding the
    point (section 2.3.3), some modules give the bare point; the length tells which."""
    raw_length = 1 + 2 * field_bytes
    if len(value) == raw_length and value[0] == 0x04:
        return value
    from asn1crypto.core import OctetString

    try:
        point = bytes(OctetString.load(value).native)
    except (ValueError, TypeError):
        point = b""
    if len(point) != raw_length or point[0] != 0x04:
        raise TokenError(
            f"The token's CKA_EC_POINT ({len(value)} bytes) is not an uncompressed point.",
            hint="The module misbehaves; report it with --debug output.",
        )
    return point


def ec_spki(ec_params: bytes, ec_point: bytes) -> bytes:
    """SubjectPublicKeyInfo DER of an EC key from CKA_EC_PARAMS and CKA_EC_POINT."""
    from asn1crypto import keys

    curve, field_bytes = _curve_field_bytes(ec_params)
    point = ec_point_from_attribute(ec_point, field_bytes)
    return keys.PublicKeyInfo({
        "algorithm": {"algorithm": "ec", "parameters": keys.ECDomainParameters("named", curve)},
        "public_key": point,
    }).dump()


def _comparable(spki: bytes) -> tuple[object, ...]:
    from asn1crypto import keys

    info = keys.PublicKeyInfo.load(spki)
    algorithm = info["algorithm"]["algorithm"].native
    if algorithm == "rsa":
        parsed = info["public_key"].parsed
        return ("rsa", parsed["modulus"].native, parsed["public_exponent"].native)
    if algorithm == "ec":
        return ("ec", info["algorithm"]["parameters"].chosen.native, bytes(info["public_key"]))
    return (algorithm, info["public_key"].dump())


def same_public_key(a: bytes, b: bytes) -> bool:
    """Whether two SubjectPublicKeyInfo DERs hold the same key (an RSA key's NULL parameters
    may be present or absent, so the DER alone is not compared)."""
    return _comparable(a) == _comparable(b)


def public_key_description(spki: bytes) -> str:
    """"RSA-2048", "EC secp256r1": for messages."""
    from asn1crypto import keys

    info = keys.PublicKeyInfo.load(spki)
    if info.algorithm == "rsa":
        return f"RSA-{info.bit_size}"
    if info.algorithm == "ec":
        return f"EC {info.curve[1]}"
    return info.algorithm.upper()
