"""The emulator knobs that tests of refreshing need: short credential lifetimes and refusing
every request for a while."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
from rolesanywhere_hsm.emulator.config import config_from_mapping
from rolesanywhere_hsm.errors import UsageError
from tests.emulator.conftest import create_session


def test_short_credential_lifetime(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    emulator.config.credential_lifetime = 5
    before = dt.datetime.now(dt.timezone.utc)
    response = create_session(emulator, p256_key, leaf)
    assert response.status_code == 201
    issued = emulator.last_issued
    left = (issued.expiration - before).total_seconds()
    assert 5 <= left <= 7  # rounded up to whole seconds, never shorter than asked
    assert issued.duration_seconds == 3600  # what was granted is unchanged
    expiration = response.json()["credentialSet"][0]["credentials"]["expiration"]
    assert expiration == issued.expiration.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("value", [0, -1, 43201, True, "5"])
def test_credential_lifetime_is_checked(value: Any) -> None:
    with pytest.raises(UsageError, match="credential_lifetime"):
        EmulatorConfig(credential_lifetime=value)


def test_credential_lifetime_in_a_config_file_is_checked() -> None:
    with pytest.raises(UsageError, match="credential_lifetime"):
        config_from_mapping({"credential_lifetime": 0, "trust_anchors": [{"arn": "x", "certificates": []}]})


@pytest.mark.slow  # waits on the clock
def test_refuse_for_a_while_then_recover(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    emulator.refuse_for(0.6)
    statuses = [create_session(emulator, p256_key, leaf).status_code for _ in range(2)]
    assert statuses == [503, 503]
    assert all(r.injected for r in emulator.requests)
    time.sleep(0.7)
    assert create_session(emulator, p256_key, leaf).status_code == 201


def test_refuse_for_zero_stops_refusing(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    emulator.refuse_for(60, 429)
    assert create_session(emulator, p256_key, leaf).status_code == 429
    emulator.refuse_for(0)
    assert create_session(emulator, p256_key, leaf).status_code == 201
