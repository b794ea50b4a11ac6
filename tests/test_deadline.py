"""Pure parts of the hostile-world rules, on plain data and fake clocks: the deadline, the budget
setting, the credential checks and how server text is shown."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rolesanywhere_hsm.credentials import Credentials
from rolesanywhere_hsm.deadline import DEFAULT_TIMEOUT, Deadline, check_timeout
from rolesanywhere_hsm.errors import TransportError, UsageError
from rolesanywhere_hsm.redact import one_line

NOW = dt.datetime(2030, 5, 1, 12, 0, tzinfo=dt.timezone.utc)


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def test_a_deadline_counts_down_on_its_clock() -> None:
    clock = FakeClock()
    deadline = Deadline.after(2.0, clock=clock)
    assert (deadline.remaining(), deadline.expired(), deadline.describe()) == (2.0, False, "2 s")
    clock.now += 1.5
    assert deadline.remaining() == 0.5
    assert deadline.clamp(10.0) == 0.5 and deadline.clamp(0.2) == 0.2 and deadline.clamp(None) == 0.5
    clock.now += 1.0
    assert deadline.remaining() == 0.0 and deadline.expired()


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), 86401, True])
def test_unusable_budgets_are_usage_errors(bad: Any) -> None:
    with pytest.raises(UsageError, match="is not a usable time budget"):
        check_timeout(bad)


def test_the_budget_from_the_environment() -> None:
    from rolesanywhere_hsm.settings import resolve  # the one place RAH_TIMEOUT is read

    assert resolve("credential-process", {}, {})["timeout"] == DEFAULT_TIMEOUT == 20.0
    assert resolve("credential-process", {}, {"RAH_TIMEOUT": " 2.5 "})["timeout"] == 2.5
    with pytest.raises(UsageError, match="RAH_TIMEOUT"):
        resolve("credential-process", {}, {"RAH_TIMEOUT": "soon"})


def _payload(**credentials: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "accessKeyId": "ASIAEXAMPLE", "secretAccessKey": "SECRET-MARKER",
        "sessionToken": "TOKEN-MARKER", "expiration": "2030-05-01T13:00:00Z",
    }
    base.update(credentials)
    return {"credentialSet": [{"credentials": {k: v for k, v in base.items() if v is not ...},
                               "roleArn": "arn:aws:iam::1:role/r", "sourceIdentity": 7}]}


def test_good_credentials_are_read() -> None:
    creds = Credentials.from_create_session(_payload(), now=NOW)
    assert creds.expiration == NOW + dt.timedelta(hours=1)
    assert creds.role_arn == "arn:aws:iam::1:role/r"
    assert creds.source_identity is None  # not a string: informational, dropped


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({}, "the answer has no credentialSet[0].credentials"),
        ({"credentialSet": []}, "the answer has no credentialSet[0].credentials"),
        ({"credentialSet": "x"}, "the answer has no credentialSet[0].credentials"),
        ({"credentialSet": [{"credentials": "x"}]}, "credentialSet[0].credentials is not an object"),
        (_payload(expiration="2030-05-01T12:00:00Z"), "they expired at 2030-05-01T12:00:00Z"),
        (_payload(expiration="2030-05-01T14:00:00+03:00"), "they expired at 2030-05-01T11:00:00Z"),
        (_payload(expiration="2030-05-01T13:00:00"), "expiration is not a timestamp with a timezone"),
        (_payload(expiration=1893456000), "expiration is not a string (int)"),
        (_payload(accessKeyId=" "), "accessKeyId is empty"),
        (_payload(sessionToken=...), "sessionToken is missing"),
        (_payload(secretAccessKey={"a": 1}), "secretAccessKey is not a string (dict)"),
    ],
)
def test_unusable_credentials_are_a_transport_error_naming_the_field(payload: dict[str, Any], reason: str) -> None:
    with pytest.raises(TransportError) as info:
        Credentials.from_create_session(payload, now=NOW)
    assert info.value.exit_code == 7
    assert info.value.message == f"The service answered with unusable credentials: {reason}."
    assert "MARKER" not in info.value.diagnostics()


@given(st.text(max_size=500), st.integers(min_value=10, max_value=300))
def test_one_line_is_one_short_line_without_control_characters(text: str, limit: int) -> None:
    shown = one_line(text, limit=limit)
    assert len(shown) <= limit
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029\u202e" for c in shown)


def test_one_line_escapes_what_would_drive_a_terminal() -> None:
    assert one_line("a\x1b[31mb\r\nc\u202ed") == "a\\x1b[31mb\\x0d\\x0ac\\u202ed"
    assert one_line("x" * 300) == "x" * 197 + "..."
