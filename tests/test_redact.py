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
        ("env:MyPin42", HIDDEN),  # a valid variable name, but more likely a PIN
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


@given(st.text())
def test_redact_is_idempotent(text: str) -> None:
    once = redact(text)
    assert redact(once) == once


def test_a_hidden_value_keeps_what_follows_it() -> None:
    shown = redact(f" pkcs11:token=t?pin-value={PIN}") + ": No such file or directory."
    assert redact(shown) == " pkcs11:token=t?pin-value=<hidden>: No such file or directory."


@pytest.mark.parametrize(
    "message",
    [
        f"Cannot read the certificate file  pkcs11:token=t?pin-value={PIN}: No such file.",
        f"Cannot read pkcs11;token=t?pin-value=12&34{PIN}",
        f"pin-source={PIN} is not understood",
        f"HTTP error talking to https://user:{PIN}@127.0.0.1:1/: refused",
    ],
)
def test_every_error_message_and_hint_is_redacted_at_construction(message: str) -> None:
    """The safety net in errors.py: a raising site that forgot redact() still leaks nothing,
    neither in the one-line message nor in str(exc) (what a --debug traceback shows)."""
    from rolesanywhere_hsm.errors import CertificateError, ServiceError, service_error

    for exc in (CertificateError(message, hint=message), service_error("X", 400, message),
                ServiceError(message, error_type="X", status=400)):
        assert PIN not in exc.diagnostics()
        assert PIN not in str(exc)
        assert PIN not in repr(exc)


def test_error_messages_escape_control_characters() -> None:
    from rolesanywhere_hsm.errors import service_error

    exc = service_error("AccessDeniedException", 403, "denied\x1b]0;owned\x07\r\nInjected: yes")
    assert "\x1b" not in exc.message and "\n" not in exc.message and "\\x1b" in exc.message


def test_signer_config_repr_hides_every_secret() -> None:
    from rolesanywhere_hsm.signers.base import SignerConfig

    config = SignerConfig(
        certificate=f" pkcs11:token=t?pin-value={PIN}",  # taken for a file name
        private_key=f"pkcs11;token=t?pin-value={PIN}",
        intermediates=f"pkcs:x?pin-source={PIN}",
        pkcs8_password=PIN,
        pkcs11_lib=f"https://u:{PIN}@x/lib.so",
    )
    text = repr(config)
    assert PIN not in text
    assert "pkcs8_password=<hidden>" in text


def test_log_records_are_redacted_by_the_filter() -> None:
    import logging

    from rolesanywhere_hsm.redact import RedactingFilter

    record = logging.LogRecord("rolesanywhere_hsm.pkcs11", logging.DEBUG, __file__, 1,
                               "module %s, key %s", (f"/m.so?pin-value={PIN}", "k"), None)
    assert RedactingFilter().filter(record)
    assert PIN not in record.getMessage() and record.getMessage().startswith("module /m.so")
    plain = logging.LogRecord("x", logging.DEBUG, __file__, 1, "retry %d", (2,), None)
    RedactingFilter().filter(plain)
    assert plain.getMessage() == "retry 2"
