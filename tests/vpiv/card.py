"""The PIV applet of a virtual YubiKey 5: just enough of SP 800-73-4 and Yubico's extensions
for ykcs11 and OpenSC to list its objects, log in and sign, with a PIN retry counter that really
blocks.

Keys live in memory as `cryptography` objects (this is test infrastructure). What a real key does
and this one does too: PIN policies per slot (9c needs the PIN before every signature, 9e never),
raw RSA and prehashed ECDSA in GENERAL AUTHENTICATE, 61xx/GET RESPONSE for long answers, command
chaining, GET VERSION/SERIAL/METADATA and attestation, and what provisioning needs: mutual
authentication with the management key (3DES, or AES-128/192/256), GENERATE ASYMMETRIC KEY
PAIR and PUT DATA, both refused without that authentication. What it leaves out: PUK and PIN
change by APDU (tests change the PIN through `change_pin`), management key change, touch, secure messaging.

For the signer's error paths it can also misbehave on request: `refuse_next_signatures(n, sw)`
makes the next n signatures it would have made answer an error status word instead, as a card
does whose key access fails mid-session, so that tests see how each PKCS#11 module reacts.

For benchmarks it can also be as slow as a real key: RAH_VPIV_LATENCY (read when the card is
made, see `Latency.from_env`) adds a delay to each PIN VERIFY and each signature.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import NameOID, ObjectIdentifier

from tests.vpiv import tlv

__all__ = [
    "PIV_AID",
    "YUBIKEY5_ATR",
    "PinPolicy",
    "Latency",
    "PivCard",
    "SlotKey",
    "make_attestation_key",
]

# SP 800-73-4 part 1, 2.2: the PIV application identifier; cards answer to its truncation too.
PIV_AID = bytes.fromhex("A000000308000010000100")
PIV_AID_SHORT = PIV_AID[:5]
# What a YubiKey 5 (USB, CCID) answers to reset: T=1, historical bytes "...YubiKey@".
YUBIKEY5_ATR = bytes.fromhex("3BFD1300008131FE158073C021C057597562694B657940")

# Status words (ISO 7816-4; SP 800-73-4 part 2, 3.x).
SW_OK = b"\x90\x00"
SW_SECURITY_STATUS = b"\x69\x82"
SW_AUTH_BLOCKED = b"\x69\x83"
SW_CONDITIONS = b"\x69\x85"
SW_WRONG_DATA = b"\x6a\x80"
SW_NOT_FOUND = b"\x6a\x82"
SW_INCORRECT_P1P2 = b"\x6a\x86"
SW_REF_NOT_FOUND = b"\x6a\x88"
SW_WRONG_LENGTH = b"\x67\x00"
SW_INS_NOT_SUPPORTED = b"\x6d\x00"
SW_CLA_NOT_SUPPORTED = b"\x6e\x00"

INS_VERIFY = 0x20
INS_GENERATE_ASYMMETRIC = 0x47
INS_GENERAL_AUTHENTICATE = 0x87
INS_PUT_DATA = 0xDB
INS_SELECT = 0xA4
INS_GET_RESPONSE = 0xC0
INS_GET_DATA = 0xCB
# Yubico extensions (developers.yubico.com/PIV/Introduction/Yubico_extensions.html).
INS_GET_METADATA = 0xF7
INS_GET_SERIAL = 0xF8
INS_ATTEST = 0xF9
INS_GET_VERSION = 0xFD

PIN_REF = 0x80
PUK_REF = 0x81
MGM_REF = 0x9B

# Algorithm identifiers (SP 800-78-4 table 6-2 plus Yubico's RSA-3072/4096).
ALG_RSA1024, ALG_RSA2048, ALG_RSA3072, ALG_RSA4096 = 0x06, 0x07, 0x05, 0x16
ALG_P256, ALG_P384 = 0x11, 0x14
ALG_3DES = 0x03
ALG_AES128, ALG_AES192, ALG_AES256 = 0x08, 0x0A, 0x0C
_MGM_KEY_LENGTHS = {ALG_3DES: 24, ALG_AES128: 16, ALG_AES192: 24, ALG_AES256: 32}
# The factory default management key of every YubiKey (3DES): never to be used silently.
DEFAULT_MANAGEMENT_KEY = bytes.fromhex("010203040506070801020304050607080102030405060708")
_RSA_ALGS = {1024: ALG_RSA1024, 2048: ALG_RSA2048, 3072: ALG_RSA3072, 4096: ALG_RSA4096}
_EC_ALGS = {"secp256r1": ALG_P256, "secp384r1": ALG_P384}

# Key reference -> data object holding its certificate (SP 800-73-4 part 1, table 3/4).
CERT_OBJECTS: dict[int, int] = {
    0x9A: 0x5FC105,
    0x9C: 0x5FC10A,
    0x9D: 0x5FC10B,
    0x9E: 0x5FC101,
    **{0x82 + i: 0x5FC10D + i for i in range(20)},  # retired key management 1..20
    0xF9: 0x5FFF01,  # Yubico: the attestation key's certificate
}
OBJ_CHUID, OBJ_CCC, OBJ_KEY_HISTORY, OBJ_DISCOVERY = 0x5FC102, 0x5FC107, 0x5FC10C, 0x7E

# Yubico's attestation certificate extensions (1.3.6.1.4.1.41482.3.x).
_OID_FIRMWARE = ObjectIdentifier("1.3.6.1.4.1.41482.3.3")
_OID_SERIAL = ObjectIdentifier("1.3.6.1.4.1.41482.3.7")
_OID_POLICY = ObjectIdentifier("1.3.6.1.4.1.41482.3.8")
_OID_FORMFACTOR = ObjectIdentifier("1.3.6.1.4.1.41482.3.9")


class PinPolicy(enum.IntEnum):
    """Yubico's PIN policy encoding (GET METADATA tag 02, byte 1)."""

    DEFAULT = 0
    NEVER = 1
    ONCE = 2
    ALWAYS = 3


TOUCH_NEVER, TOUCH_ALWAYS, TOUCH_CACHED = 1, 2, 3
ORIGIN_GENERATED, ORIGIN_IMPORTED = 1, 2


def _der_integer(value: int) -> bytes:
    """DER INTEGER of a non-negative value: how Yubico encodes the serial extension (.3.7)."""
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return b"\x02" + bytes([len(body)]) + body


@dataclass
class SlotKey:
    """A private key in one PIV slot, with the certificate stored in the slot's data object."""

    slot: int
    private_key: Any  # rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    certificate: x509.Certificate | None
    pin_policy: PinPolicy = PinPolicy.ONCE
    origin: int = ORIGIN_GENERATED
    touch_policy: int = TOUCH_NEVER  # recorded and attested; the card never waits for a touch

    @property
    def algorithm(self) -> int:
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            return _RSA_ALGS[self.private_key.key_size]
        return _EC_ALGS[self.private_key.curve.name]


def make_attestation_key(
    serial: int, issuer: tuple[Any, x509.Certificate] | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A stand-in for the f9 key and its certificate ("Yubico PIV Attestation").

    `issuer` (key, certificate) plays Yubico's PIV root CA: the f9 certificate is issued by it,
    as on a real key, so that a verifier given that root as its trust anchor accepts the chain
    slot attestation -> f9 -> root. Without one the f9 certificate is self-signed (a card whose
    attestation chains to nothing anyone trusts)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Yubico PIV Attestation (virtual #{serial})")])
    signer, issuer_name = (key, name) if issuer is None else (issuer[0], issuer[1].subject)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(signer, hashes.SHA256())
    )
    return key, cert


@dataclass
class _Apdu:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    le: int  # maximum response length the reader accepts


@dataclass(frozen=True)
class Latency:
    """Seconds the card takes, on top of its own work, for a PIN VERIFY, an RSA signature and
    an EC signature. `RAH_VPIV_LATENCY="verify=25,rsa=150,ec=60"` (milliseconds; "yubikey" is
    those figures, typical of a YubiKey 5) sets it for the card process; unset: no delay."""

    verify: float = 0.0
    rsa: float = 0.0
    ec: float = 0.0

    @classmethod
    def from_env(cls) -> Latency:
        text = os.environ.get("RAH_VPIV_LATENCY", "").strip()
        if text == "yubikey":
            text = "verify=25,rsa=150,ec=60"
        values = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, millis = part.partition("=")
            if name not in ("verify", "rsa", "ec"):
                raise ValueError(f"RAH_VPIV_LATENCY: unknown operation {name!r} (verify, rsa, ec)")
            values[name] = float(millis) / 1000
        return cls(**values)


def _parse_apdu(raw: bytes) -> _Apdu:
    """Decode short and extended C-APDUs (ISO 7816-4, 5.1); raises ValueError if malformed."""
    if len(raw) < 4:
        raise ValueError("APDU shorter than a header")
    cla, ins, p1, p2 = raw[:4]
    body = raw[4:]
    data, le = b"", 256
    if len(body) == 1:  # case 2S
        le = body[0] or 256
    elif len(body) >= 3 and body[0] == 0:  # extended
        if len(body) == 3:  # case 2E
            le = int.from_bytes(body[1:3], "big") or 65536
        else:
            lc = int.from_bytes(body[1:3], "big")
            data = body[3:3 + lc]
            rest = body[3 + lc:]
            if len(data) != lc or len(rest) not in (0, 2):
                raise ValueError("bad extended APDU lengths")
            le = (int.from_bytes(rest, "big") or 65536) if rest else 65536
    elif body:
        lc = body[0]
        data = body[1:1 + lc]
        rest = body[1 + lc:]
        if len(data) != lc or len(rest) > 1:
            raise ValueError("bad short APDU lengths")
        le = (rest[0] or 256) if rest else 256
    return _Apdu(cla, ins, p1, p2, data, le)


@dataclass
class PivCard:
    """The applet's state machine. `transmit` takes a C-APDU and returns an R-APDU.

    `pin_retries_left` is the real counter: 3 wrong PINs block the PIN (6983) until
    `reset_pin_retries()`, the test-side equivalent of a PUK unblock.
    """

    keys: dict[int, SlotKey]
    serial: int = 31415926
    version: tuple[int, int, int] = (5, 4, 3)
    pin: str = "123456"
    pin_retries_total: int = 3
    attestation: tuple[Any, x509.Certificate] | None = None
    management_key: bytes = DEFAULT_MANAGEMENT_KEY
    management_algorithm: int = ALG_3DES
    latency: Latency = field(default_factory=Latency.from_env)
    pin_retries_left: int = field(init=False)
    pin_verified: bool = field(init=False, default=False)
    # PIN policy "always": a verification is consumed by the next signature.
    pin_fresh: bool = field(init=False, default=False)
    selected: bool = field(init=False, default=False)
    management_authenticated: bool = field(init=False, default=False)
    _witness: bytes | None = field(init=False, default=None)
    # PUT DATA writes: data object tag -> its 53 TLV, served by GET DATA before the built-ins.
    objects: dict[int, bytes] = field(init=False, default_factory=dict)
    generated: list[int] = field(init=False, default_factory=list)
    verify_attempts: int = field(init=False, default=0)
    signatures: dict[int, int] = field(init=False, default_factory=dict)
    # Fault injection (refuse_next_signatures): pending refusals, their SW, and what was refused.
    refusals_pending: int = field(init=False, default=0)
    refusal_sw: bytes = field(init=False, default=SW_SECURITY_STATUS)
    refused: dict[int, int] = field(init=False, default_factory=dict)
    log: deque[str] = field(init=False, default_factory=lambda: deque(maxlen=400))
    _chain: tuple[int, bytes] | None = field(init=False, default=None)
    _pending: bytes = field(init=False, default=b"")
    _attestations: dict[int, x509.Certificate] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.pin_retries_left = self.pin_retries_total
        if self.attestation is None:
            self.attestation = make_attestation_key(self.serial)

    # -- card life cycle -------------------------------------------------------------------
    @property
    def atr(self) -> bytes:
        return YUBIKEY5_ATR

    def power_on(self) -> None:
        self.reset()

    def power_off(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Cold or warm reset: the security status and any half-done exchange are lost."""
        self.pin_verified = False
        self.pin_fresh = False
        self.selected = False
        self.management_authenticated = False
        self._witness = None
        self._chain = None
        self._pending = b""

    def reset_pin_retries(self) -> None:
        """What a PUK unblock would do: full retry counter, PIN not verified."""
        self.pin_retries_left = self.pin_retries_total
        self.pin_verified = False
        self.pin_fresh = False

    def change_pin(self, pin: str) -> None:
        """Set a new PIN, as CHANGE REFERENCE DATA would (the test side does it without the
        old one): the security status is kept, so a module logged in with the old PIN goes on
        signing until it has to log in again. Tests use it to make a remembered PIN wrong."""
        if not 6 <= len(pin) <= 8 or not pin.isascii():
            raise ValueError("a PIV PIN has 6 to 8 ASCII characters")
        self.pin = pin

    def refuse_next_signatures(self, count: int, sw: bytes = SW_SECURITY_STATUS) -> None:
        """Answer `sw` instead of a signature to the next `count` GENERAL AUTHENTICATE commands
        that would have signed (well-formed, PIN satisfied); 0 cancels.

        What the module sees is a card that refuses its key in the middle of a session (6982 is
        what a YubiKey answers when it no longer counts the PIN as verified). Only the answer is
        faked: the PIN's security status is left as it was, so whatever the module does next
        (retry, VERIFY again, forget its login) is its own decision, visible in the counters.
        """
        if count < 0 or len(sw) != 2 or sw == SW_OK or sw[0] == 0x61:
            raise ValueError(f"refuse {count} signatures with SW {sw.hex()}: need count >= 0 and an error SW")
        self.refusals_pending = count
        self.refusal_sw = sw

    def import_key(self, slot: int, private_key: Any, certificate: x509.Certificate | None,
                   pin_policy: PinPolicy = PinPolicy.ONCE) -> None:
        """Put a key made outside the card into `slot`, as Yubico's IMPORT ASYMMETRIC KEY does:
        it signs like any other key, GET METADATA says origin "imported", and ATTEST refuses it.
        Dropped again by `forget_provisioned`."""
        self.keys[slot] = SlotKey(slot, private_key, certificate, pin_policy, origin=ORIGIN_IMPORTED)
        self._attestations.pop(slot, None)
        self.objects.pop(CERT_OBJECTS[slot], None)
        if slot not in self.generated:
            self.generated.append(slot)

    def forget_provisioned(self) -> None:
        """Drop the keys GENERATE made and the objects PUT DATA wrote (a test's cleanup)."""
        for slot in self.generated:
            self.keys.pop(slot, None)
            self._attestations.pop(slot, None)
        self.generated.clear()
        self.objects.clear()

    def clear_counters(self) -> None:
        """Zero the counters and cancel pending refusals: a clean card for the next test."""
        self.verify_attempts = 0
        self.signatures.clear()
        self.refused.clear()
        self.refusals_pending = 0
        self.refusal_sw = SW_SECURITY_STATUS

    def status(self) -> dict[str, Any]:
        return {
            "pin_retries_left": self.pin_retries_left,
            "pin_verified": self.pin_verified,
            "verify_attempts": self.verify_attempts,
            "signatures": {f"{k:02x}": v for k, v in self.signatures.items()},
            "refused": {f"{k:02x}": v for k, v in self.refused.items()},
            "refusals_pending": self.refusals_pending,
            "generated": [f"{slot:02x}" for slot in self.generated],
            "objects": [f"{tag:06x}" for tag in self.objects],
        }

    # -- APDU dispatch ----------------------------------------------------------------------
    def transmit(self, raw: bytes) -> bytes:
        try:
            apdu = _parse_apdu(raw)
        except ValueError:
            response = SW_WRONG_LENGTH
        else:
            response = self._dispatch(apdu)
        # Never log PIN bytes: VERIFY data is replaced by its length.
        shown = raw[:5].hex() + (f"+{len(raw) - 5}B" if raw[1:2] == bytes([INS_VERIFY]) and len(raw) > 5
                                 else raw[5:21].hex() + ("..." if len(raw) > 21 else ""))
        self.log.append(f"{time.monotonic():.3f} {shown} -> {len(response) - 2}B {response[-2:].hex()}")
        return response

    def _dispatch(self, apdu: _Apdu) -> bytes:
        if apdu.cla & ~0x10 != 0x00:
            return SW_CLA_NOT_SUPPORTED
        if apdu.ins == INS_GET_RESPONSE:
            return self._respond(b"", apdu.le, continuing=True)
        self._pending = b""
        if apdu.cla & 0x10:  # command chaining: collect, answer when the last part arrives
            if self._chain is not None and self._chain[0] != apdu.ins:
                self._chain = None
            prefix = self._chain[1] if self._chain else b""
            self._chain = (apdu.ins, prefix + apdu.data)
            return SW_OK
        if self._chain is not None:
            if self._chain[0] == apdu.ins:
                apdu.data = self._chain[1] + apdu.data
            self._chain = None
        if apdu.ins == INS_SELECT:
            return self._select(apdu)
        if not self.selected:
            return SW_INS_NOT_SUPPORTED
        handler = {
            INS_GET_DATA: self._get_data,
            INS_VERIFY: self._verify,
            INS_GENERAL_AUTHENTICATE: self._general_authenticate,
            INS_GET_VERSION: self._get_version,
            INS_GET_SERIAL: self._get_serial,
            INS_GET_METADATA: self._get_metadata,
            INS_ATTEST: self._attest,
            INS_GENERATE_ASYMMETRIC: self._generate,
            INS_PUT_DATA: self._put_data,
        }.get(apdu.ins)
        if handler is None:
            return SW_INS_NOT_SUPPORTED
        return handler(apdu)

    def _respond(self, data: bytes, le: int, *, continuing: bool = False) -> bytes:
        """Answer with at most `le` bytes; announce the rest with 61xx for GET RESPONSE."""
        if continuing:
            data = self._pending
        chunk, rest = data[:le], data[le:]
        self._pending = rest
        if rest:
            return chunk + bytes([0x61, min(len(rest), 256) & 0xFF])
        return chunk + SW_OK

    # -- commands ---------------------------------------------------------------------------
    def _select(self, apdu: _Apdu) -> bytes:
        if apdu.p1 != 0x04 or len(apdu.data) < 5 or not PIV_AID.startswith(apdu.data):
            # A failed SELECT leaves the current selection alone (ISO 7816-4, 7.1.1).
            return SW_NOT_FOUND
        self.selected = True
        # Application property template: PIX of the AID and the coexistent tag allocation authority.
        apt = tlv.encode(0x4F, PIV_AID[5:]) + tlv.encode(0x79, tlv.encode(0x4F, PIV_AID_SHORT))
        return self._respond(tlv.encode(0x61, apt), apdu.le)

    def _get_data(self, apdu: _Apdu) -> bytes:
        if (apdu.p1, apdu.p2) != (0x3F, 0xFF):
            return SW_INCORRECT_P1P2
        try:
            request = tlv.parse_dict(apdu.data)
        except ValueError:
            return SW_WRONG_DATA
        if 0x5C not in request:
            return SW_WRONG_DATA
        value = self._data_object(int.from_bytes(request[0x5C], "big"))
        if value is None:
            return SW_NOT_FOUND
        return self._respond(value, apdu.le)

    def _data_object(self, tag: int) -> bytes | None:
        if tag in self.objects:
            return self.objects[tag]
        if tag == OBJ_DISCOVERY:
            # PIN usage policy 40 00: the PIV application PIN only.
            return tlv.encode(0x7E, tlv.encode(0x4F, PIV_AID) + tlv.encode(0x5F2F, b"\x40\x00"))
        if tag == OBJ_CHUID:
            fascn = bytes.fromhex("D4E739DA739CED39CE739D836858210842108421C84210C3EB")
            guid = self.serial.to_bytes(4, "big") * 4
            body = (tlv.encode(0x30, fascn) + tlv.encode(0x34, guid) + tlv.encode(0x35, b"20301231")
                    + tlv.encode(0x3E, b"") + tlv.encode(0xFE, b""))
            return tlv.encode(0x53, body)
        if tag == OBJ_CCC:
            card_id = bytes.fromhex("A000000116FF02") + self.serial.to_bytes(4, "big") * 3 + b"\x00\x00"
            body = (tlv.encode(0xF0, card_id) + tlv.encode(0xF1, b"\x21") + tlv.encode(0xF2, b"\x21")
                    + tlv.encode(0xF3, b"") + tlv.encode(0xF4, b"\x00") + tlv.encode(0xF5, b"\x10")
                    + b"".join(tlv.encode(t, b"") for t in (0xF6, 0xF7, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE)))
            return tlv.encode(0x53, body)
        if tag == OBJ_KEY_HISTORY:
            return tlv.encode(0x53, tlv.encode(0xC1, b"\x00") + tlv.encode(0xC2, b"\x00") + tlv.encode(0xFE, b""))
        for slot, obj in CERT_OBJECTS.items():
            if obj == tag:
                cert = self._certificate(slot)
                if cert is None:
                    return None
                der = cert.public_bytes(serialization.Encoding.DER)
                return tlv.encode(0x53, tlv.encode(0x70, der) + tlv.encode(0x71, b"\x00") + tlv.encode(0xFE, b""))
        return None

    def _certificate(self, slot: int) -> x509.Certificate | None:
        if slot == 0xF9:
            assert self.attestation is not None
            return self.attestation[1]
        key = self.keys.get(slot)
        return key.certificate if key else None

    def _verify(self, apdu: _Apdu) -> bytes:
        if apdu.p2 != PIN_REF:
            return SW_REF_NOT_FOUND
        if apdu.p1 == 0xFF:  # reset the security status (a "logout")
            if apdu.data:
                return SW_WRONG_LENGTH
            self.pin_verified = self.pin_fresh = False
            return SW_OK
        if apdu.p1 != 0x00:
            return SW_INCORRECT_P1P2
        if not apdu.data:  # status query: is the PIN verified, and how many tries are left
            if self.pin_retries_left == 0:
                return SW_AUTH_BLOCKED
            return SW_OK if self.pin_verified else bytes([0x63, 0xC0 | self.pin_retries_left])
        if len(apdu.data) != 8:
            return SW_WRONG_LENGTH
        self.verify_attempts += 1
        time.sleep(self.latency.verify)
        if self.pin_retries_left == 0:
            return SW_AUTH_BLOCKED
        if apdu.data == self.pin.encode().ljust(8, b"\xff"):
            self.pin_retries_left = self.pin_retries_total
            self.pin_verified = self.pin_fresh = True
            return SW_OK
        # A failed VERIFY also resets the PIN's security status (SP 800-73-4 part 2, 3.2.1):
        # every key is "logged out", not only the one the PIN was meant for. The try that uses
        # up the counter answers 63C0; only later ones get 6983.
        self.pin_retries_left -= 1
        self.pin_verified = self.pin_fresh = False
        return bytes([0x63, 0xC0 | self.pin_retries_left])

    def _general_authenticate(self, apdu: _Apdu) -> bytes:
        slot = apdu.p2
        key = self.keys.get(slot)
        if slot == MGM_REF:
            return self._authenticate_management(apdu)
        if key is None:
            return SW_NOT_FOUND
        if apdu.p1 != key.algorithm:
            return SW_INCORRECT_P1P2
        try:
            outer = tlv.parse_dict(apdu.data)
            inner = tlv.parse_dict(outer[0x7C])
        except (ValueError, KeyError):
            return SW_WRONG_DATA
        if 0x81 not in inner or inner.get(0x82, None) != b"":
            return SW_WRONG_DATA  # only "sign this challenge" is supported
        if key.pin_policy == PinPolicy.ALWAYS and not self.pin_fresh:
            return SW_SECURITY_STATUS
        if key.pin_policy in (PinPolicy.ONCE, PinPolicy.DEFAULT) and not self.pin_verified:
            return SW_SECURITY_STATUS
        if self.refusals_pending:
            self.refusals_pending -= 1
            self.refused[slot] = self.refused.get(slot, 0) + 1
            return self.refusal_sw
        time.sleep(self.latency.rsa if isinstance(key.private_key, rsa.RSAPrivateKey) else self.latency.ec)
        signature = self._sign(key, inner[0x81])
        if signature is None:
            return SW_WRONG_DATA
        if key.pin_policy == PinPolicy.ALWAYS:
            self.pin_fresh = False
        self.signatures[slot] = self.signatures.get(slot, 0) + 1
        return self._respond(tlv.encode(0x7C, tlv.encode(0x82, signature)), apdu.le)

    def _management_cipher(self, data: bytes, *, decrypt: bool = False) -> bytes:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        if self.management_algorithm == ALG_3DES:
            from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES

            algorithm: Any = TripleDES(self.management_key)
        else:
            algorithm = algorithms.AES(self.management_key)
        cipher = Cipher(algorithm, modes.ECB())  # noqa: S305 (what PIV specifies for one block)
        op = cipher.decryptor() if decrypt else cipher.encryptor()
        return op.update(data) + op.finalize()

    def _authenticate_management(self, apdu: _Apdu) -> bytes:
        """SP 800-73-4 part 2, appendix A.1 mutual authentication: the card sends an encrypted
        witness, the host returns it decrypted with a challenge of its own, the card answers
        the challenge encrypted. Any failure clears the authentication."""
        self.management_authenticated = False
        if apdu.p1 != self.management_algorithm:
            self._witness = None
            return SW_INCORRECT_P1P2
        block = 8 if self.management_algorithm == ALG_3DES else 16
        try:
            inner = tlv.parse_dict(tlv.parse_dict(apdu.data)[0x7C])
        except (ValueError, KeyError):
            self._witness = None
            return SW_WRONG_DATA
        if inner.get(0x80) == b"" and 0x81 not in inner:
            import os

            self._witness = os.urandom(block)
            witness = self._management_cipher(self._witness)
            return self._respond(tlv.encode(0x7C, tlv.encode(0x80, witness)), apdu.le)
        witness, self._witness = self._witness, None
        answer, challenge = inner.get(0x80), inner.get(0x81)
        if witness is None or answer is None or challenge is None or len(challenge) != block:
            return SW_WRONG_DATA
        if answer != witness:
            return SW_SECURITY_STATUS
        self.management_authenticated = True
        response = self._management_cipher(challenge)
        return self._respond(tlv.encode(0x7C, tlv.encode(0x82, response)), apdu.le)

    def _generate(self, apdu: _Apdu) -> bytes:
        """GENERATE ASYMMETRIC KEY PAIR (SP 800-73-4 part 2, 3.3.2) into slot P2, with Yubico's
        PIN policy tag AA; answers the public key (7F49)."""
        if not self.management_authenticated:
            return SW_SECURITY_STATUS
        slot = apdu.p2
        if slot not in CERT_OBJECTS or slot == 0xF9 or apdu.p1 != 0:
            return SW_INCORRECT_P1P2
        try:
            template = tlv.parse_dict(tlv.parse_dict(apdu.data)[0xAC])
            algorithm = template[0x80][0]
        except (ValueError, KeyError, IndexError):
            return SW_WRONG_DATA
        rsa_bits = {v: k for k, v in _RSA_ALGS.items()}.get(algorithm)
        curve = {ALG_P256: ec.SECP256R1(), ALG_P384: ec.SECP384R1()}.get(algorithm)
        if rsa_bits is not None:
            private: Any = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        elif curve is not None:
            private = ec.generate_private_key(curve)
        else:
            return SW_WRONG_DATA
        default_policy = {0x9C: PinPolicy.ALWAYS, 0x9E: PinPolicy.NEVER}.get(slot, PinPolicy.ONCE)
        policy = template.get(0xAA, b"")
        touch = template.get(0xAB, b"")  # Yubico's touch policy tag
        self.keys[slot] = SlotKey(slot, private, None,
                                  PinPolicy(policy[0]) if policy and policy[0] else default_policy,
                                  touch_policy=touch[0] if touch and touch[0] else TOUCH_NEVER)
        self._attestations.pop(slot, None)
        self.objects.pop(CERT_OBJECTS[slot], None)
        if slot not in self.generated:
            self.generated.append(slot)
        public = private.public_key()
        if rsa_bits is not None:
            numbers = public.public_numbers()
            body = (tlv.encode(0x81, numbers.n.to_bytes((rsa_bits + 7) // 8, "big"))
                    + tlv.encode(0x82, numbers.e.to_bytes(3, "big")))
        else:
            body = tlv.encode(0x86, public.public_bytes(serialization.Encoding.X962,
                                                        serialization.PublicFormat.UncompressedPoint))
        return self._respond(tlv.encode(0x7F49, body), apdu.le)

    def _put_data(self, apdu: _Apdu) -> bytes:
        """PUT DATA (SP 800-73-4 part 2, 3.3.3): 5C names the object, 53 is its new content
        (an empty 53 deletes it)."""
        if not self.management_authenticated:
            return SW_SECURITY_STATUS
        if (apdu.p1, apdu.p2) != (0x3F, 0xFF):
            return SW_INCORRECT_P1P2
        try:
            fields = list(tlv.decode(apdu.data))
        except ValueError:
            return SW_WRONG_DATA
        if len(fields) != 2 or fields[0][0] != 0x5C or fields[1][0] != 0x53:
            return SW_WRONG_DATA
        tag = int.from_bytes(fields[0][1], "big")
        if fields[1][1]:
            self.objects[tag] = tlv.encode(0x53, fields[1][1])
        else:
            self.objects.pop(tag, None)
        for slot, obj in CERT_OBJECTS.items():
            key = self.keys.get(slot)
            if obj == tag and key is not None and fields[1][1]:
                try:
                    der = tlv.parse_dict(fields[1][1])[0x70]
                    key.certificate = x509.load_der_x509_certificate(der)
                except (ValueError, KeyError):
                    key.certificate = None
        return SW_OK

    @staticmethod
    def _sign(key: SlotKey, challenge: bytes) -> bytes | None:
        private = key.private_key
        if isinstance(private, rsa.RSAPrivateKey):
            # Raw RSA over a block the host has already padded (PKCS#1 v1.5 or PSS).
            size = (private.key_size + 7) // 8
            if len(challenge) != size:
                return None
            n = private.public_key().public_numbers().n
            m = int.from_bytes(challenge, "big")
            if m >= n:
                return None
            # CRT: four times faster than pow(m, d, n), which matters in pure Python.
            numbers = private.private_numbers()
            m1 = pow(m, numbers.dmp1, numbers.p)
            m2 = pow(m, numbers.dmq1, numbers.q)
            h = numbers.iqmp * (m1 - m2) % numbers.p
            return (m2 + h * numbers.q).to_bytes(size, "big")
        # ECDSA over a digest the host computed: normalise it to the field size, as the card does.
        size = (private.curve.key_size + 7) // 8
        digest = challenge[:size].rjust(size, b"\x00")
        algorithm = hashes.SHA256() if size == 32 else hashes.SHA384()
        return private.sign(digest, ec.ECDSA(Prehashed(algorithm)))

    def _get_version(self, apdu: _Apdu) -> bytes:
        return self._respond(bytes(self.version), apdu.le)

    def _get_serial(self, apdu: _Apdu) -> bytes:
        return self._respond(self.serial.to_bytes(4, "big"), apdu.le)

    def _get_metadata(self, apdu: _Apdu) -> bytes:
        ref = apdu.p2
        if ref in (PIN_REF, PUK_REF):
            retries = self.pin_retries_left if ref == PIN_REF else 3
            default = 1 if (ref == PIN_REF and self.pin == "123456") or ref == PUK_REF else 0
            body = (tlv.encode(0x01, b"\xff") + tlv.encode(0x05, bytes([default]))
                    + tlv.encode(0x06, bytes([self.pin_retries_total if ref == PIN_REF else 3, retries])))
            return self._respond(body, apdu.le)
        if ref == MGM_REF:
            default = 1 if self.management_key == DEFAULT_MANAGEMENT_KEY else 0
            body = (tlv.encode(0x01, bytes([self.management_algorithm]))
                    + tlv.encode(0x02, bytes([0, TOUCH_NEVER])) + tlv.encode(0x05, bytes([default])))
            return self._respond(body, apdu.le)
        key = self.keys.get(ref)
        if key is None:
            return SW_NOT_FOUND
        public = key.private_key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            numbers = public.public_numbers()
            pub = (tlv.encode(0x81, numbers.n.to_bytes((public.key_size + 7) // 8, "big"))
                   + tlv.encode(0x82, numbers.e.to_bytes(3, "big")))
        else:
            point = public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
            pub = tlv.encode(0x86, point)
        body = (tlv.encode(0x01, bytes([key.algorithm]))
                + tlv.encode(0x02, bytes([int(key.pin_policy), key.touch_policy]))
                + tlv.encode(0x03, bytes([key.origin])) + tlv.encode(0x04, pub))
        return self._respond(body, apdu.le)

    def _attest(self, apdu: _Apdu) -> bytes:
        key = self.keys.get(apdu.p1)
        if key is None:
            return SW_NOT_FOUND
        if key.origin != ORIGIN_GENERATED:
            return SW_CONDITIONS  # a YubiKey attests only keys it generated itself
        cert = self._attestations.get(apdu.p1)
        if cert is None:
            cert = self._attestations[apdu.p1] = self._issue_attestation(key)
        return self._respond(cert.public_bytes(serialization.Encoding.DER), apdu.le)

    def _issue_attestation(self, key: SlotKey) -> x509.Certificate:
        assert self.attestation is not None
        issuer_key, issuer_cert = self.attestation
        now = dt.datetime.now(dt.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"YubiKey PIV Attestation {key.slot:02x}")]))
            .issuer_name(issuer_cert.subject)
            .public_key(key.private_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.UnrecognizedExtension(_OID_FIRMWARE, bytes(self.version)), critical=False)
            .add_extension(x509.UnrecognizedExtension(_OID_SERIAL, _der_integer(self.serial)), critical=False)
            .add_extension(x509.UnrecognizedExtension(_OID_POLICY, bytes([int(key.pin_policy), key.touch_policy])),
                           critical=False)
            .add_extension(x509.UnrecognizedExtension(_OID_FORMFACTOR, b"\x01"), critical=False)
            .sign(issuer_key, hashes.SHA256())
        )
