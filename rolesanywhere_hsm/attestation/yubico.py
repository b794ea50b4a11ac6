"""YubiKey PIV attestation as data: Yubico's OIDs and encodings, with no I/O.

A YubiKey signs, with the key in slot f9, an X.509 certificate for the public key of a key it
generated (INS F9, "attest"); the f9 certificate is issued by Yubico's PIV root CA. Yubico's
extensions in the slot's attestation certificate (developers.yubico.com, PIV attestation):

    1.3.6.1.4.1.41482.3.3   firmware version, 3 raw bytes (major, minor, patch)
    1.3.6.1.4.1.41482.3.7   serial number, a DER INTEGER
    1.3.6.1.4.1.41482.3.8   PIN policy, touch policy: 2 raw bytes
    1.3.6.1.4.1.41482.3.9   form factor, 1 raw byte

In a certificate request, YubiKey tooling (Yubico's .NET SDK users, AD CS policy modules that
check YubiKey attestation) puts the two certificates into the extensionRequest attribute as
non-critical extensions whose value is the certificate's DER: 1.3.6.1.4.1.41482.3.1 the slot's
attestation certificate (1.3.6.1.4.1.41482.3.11 in older tools, read here but never written),
1.3.6.1.4.1.41482.3.2 the f9 ("intermediate") certificate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "FORM_FACTORS",
    "OID_CSR_ATTESTATION",
    "OID_CSR_ATTESTATION_LEGACY",
    "OID_CSR_INTERMEDIATE",
    "PIN_POLICIES",
    "TOUCH_POLICIES",
    "YubiKeyFacts",
    "facts_of",
    "slot_for_id",
]

OID_CSR_ATTESTATION = "1.3.6.1.4.1.41482.3.1"
OID_CSR_ATTESTATION_LEGACY = "1.3.6.1.4.1.41482.3.11"
OID_CSR_INTERMEDIATE = "1.3.6.1.4.1.41482.3.2"
OID_FIRMWARE = "1.3.6.1.4.1.41482.3.3"
OID_SERIAL = "1.3.6.1.4.1.41482.3.7"
OID_POLICY = "1.3.6.1.4.1.41482.3.8"
OID_FORM_FACTOR = "1.3.6.1.4.1.41482.3.9"

# Yubico's words for the policy bytes (GET METADATA and the .3.8 extension agree).
PIN_POLICIES = {1: "never", 2: "once", 3: "always", 4: "match-once", 5: "match-always"}
TOUCH_POLICIES = {1: "never", 2: "always", 3: "cached"}
# The low nibble of .3.9; the high bits are flags (FIPS, CSPN) on newer keys.
FORM_FACTORS = {
    0: "unknown", 1: "usb-a-keychain", 2: "usb-a-nano", 3: "usb-c-keychain", 4: "usb-c-nano",
    5: "usb-c-lightning", 6: "usb-a-bio", 7: "usb-c-bio",
}

# PKCS#11 CKA_ID -> PIV key reference. Both modules number 9a, 9c, 9d, 9e as 01..04; the
# retired key-management slots 82..95 are 05..18 in ykcs11 (and f9 is 19) but keep their key
# reference (82..95) as id in OpenSC. The two ranges do not overlap.
_ID_SLOTS = {1: 0x9A, 2: 0x9C, 3: 0x9D, 4: 0x9E, **{5 + i: 0x82 + i for i in range(20)}, 0x19: 0xF9,
             **{0x82 + i: 0x82 + i for i in range(20)}}


def slot_for_id(key_id: bytes) -> int | None:
    """The PIV slot (key reference) a one-byte CKA_ID stands for, or None."""
    if len(key_id) != 1:
        return None
    return _ID_SLOTS.get(key_id[0])


@dataclass(frozen=True)
class YubiKeyFacts:
    """What the slot's attestation certificate says about the key and the device."""

    slot: str | None  # "9a", from the subject "YubiKey PIV Attestation 9a"
    serial: int | None
    firmware: str | None  # "5.4.3"
    pin_policy: str | None  # never / once / always (match-* on Bio keys)
    touch_policy: str | None  # never / always / cached
    form_factor: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"slot": self.slot, "serial": self.serial, "firmware": self.firmware,
                "pin_policy": self.pin_policy, "touch_policy": self.touch_policy,
                "form_factor": self.form_factor}


def _der_integer(value: bytes) -> int | None:
    if len(value) < 3 or value[0] != 0x02 or value[1] != len(value) - 2:
        return None
    return int.from_bytes(value[2:], "big", signed=True)


def facts_of(certificate: Any) -> YubiKeyFacts:
    """The facts of a slot attestation certificate (a `cryptography` certificate); a field a
    certificate does not carry is None (older firmware has no form factor)."""
    from cryptography import x509

    raw: dict[str, bytes] = {}
    for extension in certificate.extensions:
        if isinstance(extension.value, x509.UnrecognizedExtension):
            raw[extension.oid.dotted_string] = extension.value.value
    firmware = raw.get(OID_FIRMWARE)
    policy = raw.get(OID_POLICY, b"")
    form = raw.get(OID_FORM_FACTOR, b"")
    serial = raw.get(OID_SERIAL)
    common_names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    slot = None
    if common_names:
        tail = str(common_names[0].value).rsplit(" ", 1)[-1].lower()
        slot = tail if len(tail) == 2 and all(c in "0123456789abcdef" for c in tail) else None
    return YubiKeyFacts(
        slot=slot,
        serial=_der_integer(serial) if serial else None,
        firmware=".".join(str(b) for b in firmware) if firmware and len(firmware) == 3 else None,
        pin_policy=PIN_POLICIES.get(policy[0], f"unknown ({policy[0]})") if len(policy) >= 1 else None,
        touch_policy=TOUCH_POLICIES.get(policy[1], f"unknown ({policy[1]})") if len(policy) >= 2 else None,
        form_factor=FORM_FACTORS.get(form[0] & 0x0F, f"unknown ({form[0]})") if form else None,
    )


def _tlv(data: bytes) -> dict[int, bytes]:
    """BER-TLV as PIV data objects use it (one- or two-byte tags, definite lengths)."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        tag = data[pos]
        pos += 1
        if tag & 0x1F == 0x1F:
            while pos < len(data):
                tag = (tag << 8) | data[pos]
                pos += 1
                if not data[pos - 1] & 0x80:
                    break
        if pos >= len(data):
            raise ValueError("truncated TLV")
        length = data[pos]
        pos += 1
        if length & 0x80:
            count = length & 0x7F
            if not 1 <= count <= 3 or pos + count > len(data):
                raise ValueError("bad TLV length")
            length = int.from_bytes(data[pos:pos + count], "big")
            pos += count
        if pos + length > len(data):
            raise ValueError("truncated TLV value")
        out[tag] = data[pos:pos + length]
        pos += length
    return out


def certificate_from_object(data: bytes) -> bytes:
    """The certificate DER of a PIV certificate data object (53 { 70 cert, 71 info }); info
    01 means gzip-compressed, as YubiKeys may store large certificates."""
    try:
        body = _tlv(_tlv(data)[0x53])
        der = body[0x70]
    except (KeyError, ValueError):
        raise ValueError("not a PIV certificate object") from None
    if body.get(0x71, b"\x00")[:1] == b"\x01":
        import gzip

        der = gzip.decompress(der)
    return der


def metadata_origin(data: bytes) -> str | None:
    """GET METADATA's origin (tag 03): "generated", "imported" or None."""
    try:
        origin = _tlv(data).get(0x03, b"")
    except ValueError:
        return None
    return {1: "generated", 2: "imported"}.get(origin[0]) if origin else None
