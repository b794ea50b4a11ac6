"""The emulator's answers carry a Date header from its own clock (doctor's clock check reads it)."""

from __future__ import annotations

import datetime as dt
from email.utils import parsedate_to_datetime

import httpx

from rolesanywhere_hsm.emulator import Emulator


def test_date_header_follows_the_emulator_clock(emulator: Emulator) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    answered = httpx.get(emulator.url + "/")
    assert len(answered.headers.get_list("Date")) == 1
    assert abs((parsedate_to_datetime(answered.headers["Date"]) - now).total_seconds()) < 5
    emulator.shift_clock(3600)
    shifted = httpx.post(emulator.url + "/sessions", content=b"{}")
    assert shifted.status_code == 403 and len(shifted.headers.get_list("Date")) == 1
    assert 3590 < (parsedate_to_datetime(shifted.headers["Date"]) - now).total_seconds() < 3610
    frozen = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    emulator.freeze_clock(frozen)
    assert httpx.get(emulator.url + "/").headers["Date"] == "Wed, 02 Jan 2030 03:04:05 GMT"
