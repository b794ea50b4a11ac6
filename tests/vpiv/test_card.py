"""The virtual PIV card on its own, APDU by APDU (no pcscd): the protocol details that ykcs11
and OpenSC rely on, checked where a failure is easy to read."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, new_private_key
from tests.vpiv import tlv
from tests.vpiv.card import PinPolicy, PivCard, SlotKey

SELECT = bytes.fromhex("00a4040005a000000308")


@pytest.fixture(scope="module")
def keys() -> dict[int, SlotKey]:
    ca = CertificateAuthority.create("vpiv unit CA", "p256")
    made = {}
    for slot, kind, policy in ((0x9A, "rsa2048", PinPolicy.ONCE), (0x9C, "p256", PinPolicy.ALWAYS),
                               (0x9D, "p384", PinPolicy.ONCE), (0x9E, "p256", PinPolicy.NEVER)):
        key = new_private_key(kind)
        made[slot] = SlotKey(slot, key, ca.issue_leaf(key.public_key(), f"slot-{slot:02x}"), policy)
    return made


@pytest.fixture
def card(keys: dict[int, SlotKey]) -> PivCard:
    card = PivCard(dict(keys))
    assert card.transmit(SELECT)[-2:] == b"\x90\x00"
    return card


def _verify_apdu(pin: str) -> bytes:
    return bytes.fromhex("0020008008") + pin.encode().ljust(8, b"\xff")


def _get_all(card: PivCard, apdu: bytes) -> bytes:
    """Send `apdu`, then GET RESPONSE while the card says 61xx; return data + final SW."""
    response = card.transmit(apdu)
    data = response[:-2]
    while response[-2] == 0x61:
        response = card.transmit(bytes([0x00, 0xC0, 0x00, 0x00, response[-1]]))
        data += response[:-2]
    return data + response[-2:]


def _sign_apdus(alg: int, slot: int, challenge: bytes) -> list[bytes]:
    """GENERAL AUTHENTICATE, chained in 255-byte parts as the modules send it."""
    body = tlv.encode(0x7C, tlv.encode(0x82, b"") + tlv.encode(0x81, challenge))
    parts = [body[i:i + 255] for i in range(0, len(body), 255)]
    apdus = [bytes([0x10, 0x87, alg, slot, len(p)]) + p for p in parts[:-1]]
    last = parts[-1]
    return [*apdus, bytes([0x00, 0x87, alg, slot, len(last)]) + last + b"\x00"]  # Le = 256


def test_atr_checksum_is_valid(card: PivCard) -> None:
    tck = 0
    for byte in card.atr[1:]:
        tck ^= byte
    assert tck == 0


def test_commands_before_select_are_refused(keys: dict[int, SlotKey]) -> None:
    assert PivCard(dict(keys)).transmit(bytes.fromhex("00fd000000")) == b"\x6d\x00"


def test_long_certificate_comes_in_61xx_chunks(card: PivCard, keys: dict[int, SlotKey]) -> None:
    first = card.transmit(bytes.fromhex("00cb3fff055c035fc10500"))
    assert len(first) == 258 and first[-2] == 0x61
    answer = _get_all(card, bytes.fromhex("00cb3fff055c035fc10500"))
    assert answer[-2:] == b"\x90\x00"
    obj = tlv.parse_dict(tlv.parse_dict(answer[:-2])[0x53])
    assert obj[0x70] == keys[0x9A].certificate.public_bytes(Encoding.DER)  # type: ignore[union-attr]


def test_pin_counter_counts_down_blocks_and_reports(card: PivCard) -> None:
    assert card.transmit(bytes.fromhex("00200080")) == b"\x63\xc3"  # not verified, 3 left
    assert card.transmit(_verify_apdu("000000")) == b"\x63\xc2"
    assert card.transmit(_verify_apdu("000000")) == b"\x63\xc1"
    assert card.transmit(_verify_apdu("000000")) == b"\x63\xc0"
    assert card.transmit(_verify_apdu("123456")) == b"\x69\x83"  # blocked: even the right PIN
    assert card.transmit(bytes.fromhex("00200080")) == b"\x69\x83"
    card.reset_pin_retries()
    assert card.transmit(_verify_apdu("123456")) == b"\x90\x00"
    assert card.transmit(bytes.fromhex("00200080")) == b"\x90\x00"


def test_rsa_signature_is_raw_rsa_over_the_padded_block(card: PivCard, keys: dict[int, SlotKey]) -> None:
    message = b"string to sign"
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420") + hashlib.sha256(message).digest()
    block = b"\x00\x01" + b"\xff" * (256 - 3 - len(digest_info)) + b"\x00" + digest_info
    apdus = _sign_apdus(0x07, 0x9A, block)
    assert card.transmit(apdus[0]) == b"\x90\x00"
    assert _get_all(card, apdus[1])[-2:] == b"\x69\x82"  # PIN not verified
    card.transmit(_verify_apdu("123456"))
    for apdu in apdus[:-1]:
        assert card.transmit(apdu) == b"\x90\x00"
    answer = _get_all(card, apdus[-1])
    assert answer[-2:] == b"\x90\x00"
    signature = tlv.parse_dict(tlv.parse_dict(answer[:-2])[0x7C])[0x82]
    keys[0x9A].private_key.public_key().verify(signature, message, padding.PKCS1v15(), hashes.SHA256())


def test_pin_always_slot_needs_a_verify_before_each_signature(card: PivCard, keys: dict[int, SlotKey]) -> None:
    digest = hashlib.sha256(b"m").digest()
    [apdu] = _sign_apdus(0x11, 0x9C, digest)
    card.transmit(_verify_apdu("123456"))
    answer = card.transmit(apdu)
    assert answer[-2:] == b"\x90\x00"
    der = tlv.parse_dict(tlv.parse_dict(answer[:-2])[0x7C])[0x82]
    keys[0x9C].private_key.public_key().verify(der, b"m", ec.ECDSA(hashes.SHA256()))
    assert card.transmit(apdu) == b"\x69\x82"  # the verification was used up
    card.transmit(_verify_apdu("123456"))
    assert card.transmit(apdu)[-2:] == b"\x90\x00"


def test_pin_never_slot_signs_without_verify(card: PivCard) -> None:
    [apdu] = _sign_apdus(0x11, 0x9E, hashlib.sha256(b"m").digest())
    assert card.transmit(apdu)[-2:] == b"\x90\x00"


def test_wrong_algorithm_for_the_slot_is_refused(card: PivCard) -> None:
    card.transmit(_verify_apdu("123456"))
    [apdu] = _sign_apdus(0x11, 0x9D, hashlib.sha384(b"m").digest())  # 9d holds P-384 (0x14)
    assert card.transmit(apdu) == b"\x6a\x86"


def test_tlv_round_trip_with_multibyte_tags_and_long_lengths() -> None:
    items = [(0x5FC105, b"x" * 300), (0x7E, b""), (0x53, b"y" * 128)]
    encoded = b"".join(tlv.encode(tag, value) for tag, value in items)
    assert list(tlv.decode(encoded)) == items
    with pytest.raises(ValueError):
        list(tlv.decode(encoded[:-1]))


def test_refused_signatures_answer_the_chosen_sw_then_signing_resumes(card: PivCard,
                                                                     keys: dict[int, SlotKey]) -> None:
    """Fault injection for the module-quirk tests: only signatures the card would have made are
    refused (a missing PIN is still its own 6982, and uses up no refusal), the PIN stays
    verified, and the counters tell refused from made."""
    digest = hashlib.sha256(b"m").digest()
    [apdu] = _sign_apdus(0x11, 0x9E, digest)  # PIN policy never: no VERIFY needed
    [needs_pin] = _sign_apdus(0x14, 0x9D, hashlib.sha384(b"m").digest())
    card.refuse_next_signatures(2, b"\x6a\x80")
    assert card.transmit(needs_pin) == b"\x69\x82"  # not verified: the real refusal
    assert card.refusals_pending == 2
    card.transmit(_verify_apdu("123456"))
    assert card.transmit(apdu) == b"\x6a\x80"
    assert card.transmit(needs_pin) == b"\x6a\x80"
    answer = card.transmit(apdu)
    assert answer[-2:] == b"\x90\x00"
    der = tlv.parse_dict(tlv.parse_dict(answer[:-2])[0x7C])[0x82]
    keys[0x9E].private_key.public_key().verify(der, b"m", ec.ECDSA(hashes.SHA256()))
    status = card.status()
    assert status["refused"] == {"9e": 1, "9d": 1}
    assert status["signatures"] == {"9e": 1}
    assert status["refusals_pending"] == 0 and status["pin_verified"]


def test_clear_counters_cancels_pending_refusals(card: PivCard) -> None:
    [apdu] = _sign_apdus(0x11, 0x9E, hashlib.sha256(b"m").digest())
    card.refuse_next_signatures(5)
    assert card.transmit(apdu) == b"\x69\x82"  # 6982 unless told otherwise
    card.clear_counters()
    assert card.transmit(apdu)[-2:] == b"\x90\x00"
    assert card.status()["refused"] == {} and card.status()["signatures"] == {"9e": 1}


@pytest.mark.parametrize(("count", "sw"), [(-1, b"\x69\x82"), (1, b"\x90\x00"), (1, b"\x61\x10"), (1, b"\x69")])
def test_refusal_needs_an_error_sw_and_a_count(card: PivCard, count: int, sw: bytes) -> None:
    with pytest.raises(ValueError):
        card.refuse_next_signatures(count, sw)


# -- provisioning: management key, GENERATE, PUT DATA ------------------------------------------

MGM = bytes.fromhex("010203040506070801020304050607080102030405060708")


def _ecb(key: bytes, data: bytes, *, decrypt: bool = False) -> bytes:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    cipher = Cipher(TripleDES(key), modes.ECB())
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(data) + op.finalize()


def _mutual_auth(card: PivCard, key: bytes, challenge: bytes = b"hostchal") -> bytes:
    """The host side of SP 800-73-4 mutual authentication; returns the card's final R-APDU."""
    step1 = bytes.fromhex("0087039b047c028000")
    answer = card.transmit(step1)
    assert answer[-2:] == b"\x90\x00"
    witness = tlv.parse_dict(tlv.parse_dict(answer[:-2])[0x7C])[0x80]
    body = tlv.encode(0x7C, tlv.encode(0x80, _ecb(key, witness, decrypt=True)) + tlv.encode(0x81, challenge))
    return card.transmit(bytes([0x00, 0x87, 0x03, 0x9B, len(body)]) + body)


def test_mutual_authentication_proves_both_sides(card: PivCard) -> None:
    answer = _mutual_auth(card, MGM, b"12345678")
    assert answer[-2:] == b"\x90\x00" and card.management_authenticated
    assert tlv.parse_dict(tlv.parse_dict(answer[:-2])[0x7C])[0x82] == _ecb(MGM, b"12345678")


def test_a_wrong_management_key_is_refused(card: PivCard) -> None:
    assert _mutual_auth(card, bytes(24))[-2:] == b"\x69\x82"
    assert not card.management_authenticated


GENERATE_P256_82 = bytes.fromhex("0047008205ac03800111")


def test_generate_needs_the_management_key_then_answers_the_public_key(card: PivCard) -> None:
    assert card.transmit(GENERATE_P256_82)[-2:] == b"\x69\x82" and 0x82 not in card.keys
    _mutual_auth(card, MGM)
    answer = _get_all(card, GENERATE_P256_82)
    assert answer[-2:] == b"\x90\x00"
    point = tlv.parse_dict(tlv.parse_dict(answer[:-2])[0x7F49])[0x86]
    public = card.keys[0x82].private_key.public_key()
    assert point == public.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    assert card.generated == [0x82]
    card.reset()  # the authentication ends with the card session
    assert card.transmit(SELECT)[-2:] == b"\x90\x00"
    assert card.transmit(GENERATE_P256_82)[-2:] == b"\x69\x82"


def test_put_data_stores_what_get_data_returns(card: PivCard) -> None:
    obj = tlv.encode(0x5C, bytes.fromhex("5fc10d")) + tlv.encode(0x53, tlv.encode(0x70, b"cert") + tlv.encode(0x71, b"\x00"))
    put = bytes([0x00, 0xDB, 0x3F, 0xFF, len(obj)]) + obj
    assert card.transmit(put)[-2:] == b"\x69\x82"
    _mutual_auth(card, MGM)
    assert card.transmit(put)[-2:] == b"\x90\x00"
    got = card.transmit(bytes.fromhex("00cb3fff055c035fc10d00"))
    assert got == tlv.encode(0x53, tlv.encode(0x70, b"cert") + tlv.encode(0x71, b"\x00")) + b"\x90\x00"
    card.forget_provisioned()
    assert card.transmit(bytes.fromhex("00cb3fff055c035fc10d00"))[-2:] == b"\x6a\x82"
def test_latency_knob_reads_milliseconds_and_the_yubikey_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.vpiv.card import Latency

    monkeypatch.delenv("RAH_VPIV_LATENCY", raising=False)
    assert Latency.from_env() == Latency(0.0, 0.0, 0.0)
    monkeypatch.setenv("RAH_VPIV_LATENCY", "verify=5, ec=2")
    assert Latency.from_env() == Latency(verify=0.005, rsa=0.0, ec=0.002)
    monkeypatch.setenv("RAH_VPIV_LATENCY", "yubikey")
    assert Latency.from_env() == Latency(verify=0.025, rsa=0.15, ec=0.06)
    monkeypatch.setenv("RAH_VPIV_LATENCY", "sign=3")
    with pytest.raises(ValueError, match="unknown operation 'sign'"):
        Latency.from_env()
