"""The one redaction rule: what a message may quote of user input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rolesanywhere_hsm.redact import HIDDEN, redact

PIN = "48151623"


@pytest.mark.parametrize(
    "typed",
    [
        f"pkcs11:token=t;object=k?pin-value={PIN}",
        f" pkcs11:token=t?pin-value={PIN}",  # a leading space: taken for a file name
        f"pkcs11;token=t?pin-value={PIN}",
        f"pkcs:token=t?pin-value={PIN}",
        f"pkcs11:token=t?module-path=/m.so&pin-value={PIN}",
        f"pkcs11:token=t?pin-value={PIN}&module-path=/m.so",
        f"pkcs11:token=t?PIN-VALUE={PIN}",
        f"pkcs11:token=t?pin-source={PIN}",  # a PIN typed where a pin-source goes
        f"pkcs11:token=t?pin-value=12&34{PIN}",
    ],
)
def test_pin_values_never_survive(typed: str) -> None:
    shown = redact(typed)
    assert PIN not in shown
    assert HIDDEN in shown or "pin-value" not in shown.lower()


def test_the_rest_of_the_uri_is_kept_to_help_find_the_mistake() -> None:
    assert redact(f"pkcs11:token=ci;object=k?pin-value={PIN}&module-path=/m.so") == (
        f"pkcs11:token=ci;object=k?pin-value={HIDDEN}&module-path=/m.so"
    )


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("file:/etc/pin", "file:/etc/pin"),
        ("/etc/pin", "/etc/pin"),
        ("env:TOKEN_PIN", "env:TOKEN_PIN"),
        (f"cmd:/usr/bin/pass show {PIN}", "cmd:pass ..."),
        ("cmd:getpin", "cmd:getpin"),
        (f"env:{PIN}-x", HIDDEN),
        (PIN, HIDDEN),
    ],
)
def test_pin_source_is_shown_only_in_a_recognised_form(source: str, shown: str) -> None:
    assert redact(f"pkcs11:token=t?pin-source={source}") == f"pkcs11:token=t?pin-source={shown}"


def test_userinfo_of_a_url_is_dropped() -> None:
    assert redact("http://alice:s3cret@proxy.example:3128/") == "http://proxy.example:3128/"
    assert redact("https://token@host/x") == "https://host/x"


def test_control_characters_are_escaped() -> None:
    assert redact("cert\x1b[2J.pem\n") == "cert\\x1b[2J.pem\\x0a"


def test_plain_paths_are_unchanged() -> None:
    assert redact("/home/u/certs/leaf.pem") == "/home/u/certs/leaf.pem"


@given(st.text(min_size=4).filter(lambda t: "=" not in t), st.text())
def test_no_pin_value_survives_any_prefix(pin: str, prefix: str) -> None:
    shown = redact(f"{prefix}pin-value={pin}")
    assert f"pin-value={pin}" not in shown
