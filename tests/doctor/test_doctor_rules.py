"""doctor's pure rules on plain data: validity, clock skew, algorithm, chain order, token
flags, endpoint regions, and the person-facing rendering."""

from __future__ import annotations

import datetime as dt

import pytest

from rolesanywhere_hsm import x509 as rx509
from rolesanywhere_hsm.cli.doctor import render
from rolesanywhere_hsm._dev.devpki import CertificateAuthority, new_private_key
from rolesanywhere_hsm.doctor import (
    FAIL,
    PASS,
    SKIP,
    WARN,
    Check,
    algorithm_check,
    chain_order_problems,
    clock_check,
    endpoint_region,
    token_flags,
    validity_check,
)
from rolesanywhere_hsm.doctor.key import token_check
from rolesanywhere_hsm.signers.pkcs11 import selection as s
from rolesanywhere_hsm.signers.pkcs11_uri import parse_pkcs11_uri

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)


def test_validity_expired_soon_future_and_fine() -> None:
    expired = validity_check(NOW - 400 * DAY, NOW - DAY, NOW)
    assert expired.status == FAIL and "expired" in expired.message and "Renew" in expired.fix
    soon = validity_check(NOW - 300 * DAY, NOW + 10 * DAY, NOW)
    assert soon.status == WARN and "10 days" in soon.message
    assert validity_check(NOW + DAY, NOW + 400 * DAY, NOW).status == FAIL
    assert validity_check(NOW - DAY, NOW + 31 * DAY, NOW).status == PASS


@pytest.mark.parametrize(("seconds", "status"), [(0, PASS), (59, PASS), (90, WARN), (-299, WARN),
                                                 (301, FAIL), (-3600, FAIL)])
def test_clock_skew(seconds: int, status: str) -> None:
    from email.utils import format_datetime

    remote = format_datetime(NOW, usegmt=True)
    check = clock_check(remote, NOW + dt.timedelta(seconds=seconds), "http://127.0.0.1:1")
    assert check.status == status
    if status == FAIL:
        assert "Invalid signature" in check.message and "timedatectl" in check.fix
        assert ("ahead of" if seconds > 0 else "behind") in check.message


def test_clock_without_date_header_is_a_warning() -> None:
    assert clock_check(None, NOW, "https://x").status == WARN
    assert clock_check("not a date", NOW, "https://x").status == WARN


def test_endpoint_region() -> None:
    assert endpoint_region("https://rolesanywhere.eu-west-1.amazonaws.com") == "eu-west-1"
    assert endpoint_region("https://rolesanywhere-fips.us-east-1.amazonaws.com") == "us-east-1"
    assert endpoint_region("https://rolesanywhere.cn-north-1.amazonaws.com.cn") == "cn-north-1"
    assert endpoint_region("https://rolesanywhere.us-west-2.api.aws") == "us-west-2"
    assert endpoint_region("http://127.0.0.1:8443") is None


@pytest.mark.parametrize(("kind", "status"), [("p256", PASS), ("p384", PASS), ("p521", WARN),
                                              ("rsa2048", PASS)])
def test_algorithm(kind: str, status: str, file_keys: dict[str, object], root_ca: CertificateAuthority) -> None:
    cert = root_ca.issue_leaf(file_keys[kind].public_key(), "a")  # type: ignore[attr-defined]
    from cryptography.hazmat.primitives.serialization import Encoding

    check = algorithm_check(rx509.certificate_info(cert.public_bytes(Encoding.DER)))
    assert check.status == status, check


def test_ed25519_is_refused(root_ca: CertificateAuthority) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import Encoding

    cert = root_ca.issue_leaf(ed25519.Ed25519PrivateKey.generate().public_key(), "ed")
    check = algorithm_check(rx509.certificate_info(cert.public_bytes(Encoding.DER)))
    assert check.status == FAIL and "RSA" in check.fix


def _der(cert: object) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.DER)  # type: ignore[attr-defined]


def test_chain_order(root_ca: CertificateAuthority) -> None:
    upper = root_ca.issue_intermediate("Upper CA", "p256")
    lower = upper.issue_intermediate("Lower CA", "p256")
    leaf = _der(lower.issue_leaf(new_private_key("p256").public_key(), "w"))
    good = [_der(lower.certificate), _der(upper.certificate)]
    assert chain_order_problems(leaf, good) == ([], [])
    order, left_out = chain_order_problems(leaf, list(reversed(good)))
    assert order and "Upper CA" in order[0] and not left_out
    order, left_out = chain_order_problems(leaf, [*good, _der(root_ca.certificate)])
    assert not order and len(left_out) == 1 and "Test Root CA" in left_out[0]


def _token(label: str, flags: int = 0) -> s.TokenSnapshot:
    base = s.FLAG_TOKEN_INITIALIZED | s.FLAG_LOGIN_REQUIRED | s.FLAG_USER_PIN_INITIALIZED
    return s.TokenSnapshot(slot_id=1, label=label, serial="1", flags=base | flags)


def test_token_absent_locked_final_try() -> None:
    uri = parse_pkcs11_uri("pkcs11:token=missing")
    absent = token_check([_token("there")], uri, None, "/m.so")
    assert absent.status == FAIL and "'there'" in absent.message and "token=" in absent.fix
    empty = token_check([], uri, None, "/m.so")
    assert empty.status == FAIL and "no initialised token" in empty.message
    here = parse_pkcs11_uri("pkcs11:token=t")
    locked = token_check([_token("t", s.FLAG_USER_PIN_LOCKED)], here, None, "/m.so")
    assert locked.status == FAIL and "locked" in locked.message and "PUK" in locked.fix
    final = token_check([_token("t", s.FLAG_USER_PIN_FINAL_TRY)], here, None, "/m.so")
    assert final.status == WARN and "final try" in final.message
    assert token_check([_token("t")], here, None, "/m.so").status == PASS


def test_token_flags_in_words() -> None:
    assert token_flags(s.FLAG_USER_PIN_COUNT_LOW | s.FLAG_LOGIN_REQUIRED) == ["user PIN: wrong tries counted"]
    assert "no login required" in token_flags(0)


def test_render_shows_fix_under_failures_and_names_the_first() -> None:
    text = render([Check("module", PASS, "loads"), Check("token", FAIL, "absent", "insert it"),
                   Check("pin", SKIP, "not checked")])
    lines = text.splitlines()
    assert lines[0].startswith("[ok  ] module")
    assert "fix: insert it" in lines[2]
    assert lines[-1] == "1 check(s) failed; start with 'token'."


def test_token_line_says_what_the_selection_says() -> None:
    """The token line is the first half's selection rule and words: a certificate URI and a key
    URI naming two tokens that both exist is that, not a missing token."""
    cert_uri = parse_pkcs11_uri("pkcs11:token=a;object=c")
    key_uri = parse_pkcs11_uri("pkcs11:token=b;object=k")
    apart = token_check([_token("a"), _token("b")], cert_uri, key_uri, "/m.so")
    assert apart.status == FAIL and "select different tokens" in apart.message
    assert "same token" in apart.fix and apart.code == "RAH-SEL-001"
