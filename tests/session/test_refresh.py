"""The refresh rule on plain data, and the engine with a fake clock and a fake fetch."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rolesanywhere_hsm.credentials import Credentials
from rolesanywhere_hsm.errors import (
    AccessDeniedError,
    CredentialsUnavailableError,
    PinIncorrectError,
    TransportError,
)
from rolesanywhere_hsm.refresh import WAKE_INTERVAL, RefreshingCredentials, backoff_delay, refresh_times

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def s(seconds: float) -> dt.timedelta:
    return dt.timedelta(seconds=seconds)


# -- the rule ------------------------------------------------------------------------------------


@pytest.mark.slow  # hypothesis, 400 examples
@settings(max_examples=400, deadline=None)
@given(lifetime=st.floats(5, 12 * 3600), jitter=st.floats(0, 1, exclude_max=True))
def test_rule_orders_the_times_and_scales_to_the_lifetime(lifetime: float, jitter: float) -> None:
    t = refresh_times(T0, T0 + s(lifetime), jitter=jitter)
    expires = T0 + s(lifetime)
    assert T0 < t.advisory <= t.mandatory < t.usable_until < expires
    elapsed = (t.advisory - T0).total_seconds()
    advisory_lead = (expires - t.advisory).total_seconds()
    mandatory_lead = (expires - t.mandatory).total_seconds()
    assert elapsed >= 0.5 * lifetime - 1e-6          # never refreshes in the first half
    assert advisory_lead >= min(0.25 * lifetime, 960) - 1e-6 or advisory_lead == mandatory_lead
    assert advisory_lead <= 1800 + 1e-6              # at most 30 minutes early
    assert mandatory_lead <= 600 + 1e-6
    assert mandatory_lead >= min(5.0, 0.3 * lifetime) - 1e-6  # a few seconds where possible
    assert (expires - t.usable_until).total_seconds() <= 1.0 + 1e-6
    assert 0 < t.backoff_cap <= min(60.0, lifetime / 10) + 1e-6
    if lifetime >= 3600:
        assert 900 - 1e-6 <= advisory_lead             # within botocore's 15-minute window


def test_rule_examples() -> None:
    def at(lifetime: float, jitter: float = 0.0) -> tuple[float, float]:
        t = refresh_times(T0, T0 + s(lifetime), jitter=jitter)
        return (t.advisory - T0).total_seconds(), (t.mandatory - T0).total_seconds()

    assert at(5) == (2.5, 3.5)
    assert at(900) == (450.0, 675.0)        # a 15-minute session refreshes every 7.5 minutes
    assert at(3600) == (1800.0, 3000.0)     # 30 minutes early at most; botocore's 10 minutes
    assert at(43200) == (41400.0, 42600.0)
    assert at(900, 0.999)[0] == pytest.approx(0.74975 * 900, abs=0.1)  # jitter spreads a fleet
    assert at(3600, 0.5)[0] == 3600 - 1350  # min(3600 * 0.375, 1800 - 420)
    assert at(3600, 0.999)[0] == pytest.approx(3600 - 900.9, abs=0.01)  # 15 minutes early
    assert at(43200, 0.5)[0] == 43200 - 1380  # long lifetimes: 16..30 minutes early
    assert at(10, 0.999) == (7.0, 7.0)  # the mandatory floor (3 s) wins over the jitter


def test_rule_for_credentials_already_expired_is_due_at_once() -> None:
    t = refresh_times(T0, T0 - s(3), jitter=0.3)
    assert t.advisory == t.mandatory == t.usable_until == T0 - s(3)


def test_rule_rejects_jitter_out_of_range() -> None:
    with pytest.raises(ValueError):
        refresh_times(T0, T0 + s(60), jitter=1.0)


@given(failures=st.integers(1, 200), cap=st.floats(0.05, 60), rand=st.floats(0, 1, exclude_max=True))
def test_backoff_is_bounded_and_never_zero(failures: int, cap: float, rand: float) -> None:
    delay = backoff_delay(failures, cap, rand)
    assert 0 < delay <= cap
    assert delay <= 2 ** (failures - 1)


# -- the engine ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0
        self._lock = threading.Lock()

    def __call__(self) -> dt.datetime:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += s(seconds)


class Fetch:
    """Issues credentials that live `lifetime` seconds by `clock`; fails while `error` is set."""

    def __init__(self, clock: Callable[[], dt.datetime], lifetime: float = 100.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = 0
        self.error: Exception | None = None
        self.gate: threading.Event | None = None
        self.in_fetch = threading.Event()
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self.concurrent = 0
        self.max_concurrent = 0

    def __call__(self) -> Credentials:
        with self._lock:
            self.calls += 1
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            self.in_fetch.set()
            if self.gate is not None:
                assert self.gate.wait(10)
            if self.error is not None:
                raise self.error
            n = next(self._counter)
            return Credentials(f"AKIA{n:016d}", "secret", "token", self.clock() + s(self.lifetime))
        finally:
            with self._lock:
                self.concurrent -= 1


class Monotonic:
    """A monotonic clock the test moves by hand (it stops while the machine sleeps)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def engine(clock: Clock, fetch: Fetch, **kw: object) -> RefreshingCredentials:
    kw.setdefault("wake_interval", 1e9)  # the rule's own waits, unbounded (tested apart below)
    kw.setdefault("monotonic", lambda: (clock() - T0).total_seconds())  # no jumps: both agree
    return RefreshingCredentials(fetch, clock=clock, rng=lambda: 0.0, **kw)  # type: ignore[arg-type]


def test_on_demand_fetches_once_and_serves_until_the_advisory_time() -> None:
    clock, fetch = Clock(), Fetch(Clock())
    fetch.clock = clock
    creds = engine(clock, fetch)
    first = creds.current()
    assert fetch.calls == 1
    clock.advance(49)
    assert creds.current() is first and fetch.calls == 1
    clock.advance(2)  # past 50 %: the advisory refresh
    second = creds.current()
    assert fetch.calls == 2 and second is not first


def test_fifty_threads_at_once_get_one_fetch() -> None:
    clock = Clock()
    fetch = Fetch(clock)
    fetch.gate = threading.Event()
    creds = engine(clock, fetch)
    results: list[Credentials] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(creds.current())
        except BaseException as exc:  # pragma: no cover (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for thread in threads:
        thread.start()
    assert fetch.in_fetch.wait(5)
    time.sleep(0.05)  # let the others pile up on the lock
    fetch.gate.set()
    for thread in threads:
        thread.join(10)
    assert not errors
    assert fetch.calls == 1 and fetch.max_concurrent == 1
    assert len({c.access_key_id for c in results}) == 1 and len(results) == 50


def test_advisory_window_callers_do_not_wait_for_the_refresh() -> None:
    clock = Clock()
    fetch = Fetch(clock)
    creds = engine(clock, fetch)
    old = creds.current()
    clock.advance(55)  # advisory window
    fetch.gate = threading.Event()
    fetch.in_fetch.clear()
    refresher = threading.Thread(target=creds.current)
    refresher.start()
    assert fetch.in_fetch.wait(5)
    started = time.monotonic()
    assert creds.current() is old  # the lock is busy: served at once
    assert time.monotonic() - started < 1
    fetch.gate.set()
    refresher.join(5)
    assert creds.current() is not old and fetch.calls == 2


def test_failures_keep_the_old_credentials_until_they_expire_then_raise() -> None:
    clock = Clock()
    fetch = Fetch(clock)
    creds = engine(clock, fetch)
    old = creds.current()
    fetch.error = TransportError("endpoint down")
    clock.advance(60)
    assert creds.current() is old
    assert isinstance(creds.last_error, TransportError)
    clock.advance(38.5)  # 98.5 s: still before usable_until (100 - 1)
    assert creds.current() is old
    clock.advance(1)  # inside the last second: no longer handed out
    with pytest.raises(CredentialsUnavailableError) as info:
        creds.current()
    assert "endpoint down" in info.value.message
    assert isinstance(info.value.__cause__, TransportError)
    fetch.error = None
    clock.advance(11)  # past any backoff (cap: lifetime / 10 = 10 s)
    fresh = creds.current()
    assert fresh is not old and fresh.expiration > clock()


def test_backoff_limits_attempts_while_failing() -> None:
    clock = Clock()
    fetch = Fetch(clock)
    creds = engine(clock, fetch)
    creds.current()
    fetch.error = AccessDeniedError("no", error_type="AccessDeniedException", status=403)
    clock.advance(80)  # mandatory window
    for _ in range(20):
        creds.current()
    assert fetch.calls == 2  # one attempt, then the backoff holds the others back


@pytest.mark.slow  # hypothesis: a few seconds
@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(st.floats(0, 40), st.booleans()), min_size=1, max_size=40))
def test_never_hands_out_expired_credentials(steps: list[tuple[float, bool]]) -> None:
    clock = Clock()
    fetch = Fetch(clock, lifetime=30)
    creds = engine(clock, fetch)
    for advance, failing in steps:
        clock.advance(advance)
        fetch.error = TransportError("down") if failing else None
        try:
            got = creds.current()
        except CredentialsUnavailableError:
            assert failing or creds.last_error is not None
            continue
        assert got.expiration - clock() >= s(1)  # usable_until: at least a second left (L = 30 s)


def test_credentials_expired_on_arrival_count_as_a_failure() -> None:
    clock = Clock()
    fetch = Fetch(clock, lifetime=-5)
    creds = engine(clock, fetch)
    with pytest.raises(CredentialsUnavailableError) as info:
        creds.current()
    assert "clock" in (info.value.hint or "") or "clock" in info.value.message


def test_a_refused_pin_stops_refreshing_for_good() -> None:
    clock = Clock()
    fetch = Fetch(clock)
    creds = engine(clock, fetch)
    old = creds.current()
    fetch.error = PinIncorrectError("refused")
    clock.advance(60)
    assert creds.current() is old
    assert isinstance(creds.fatal_error, PinIncorrectError)
    fetch.error = None
    clock.advance(30)
    assert creds.current() is old and fetch.calls == 2  # not tried again
    assert creds.next_wait() is None
    clock.advance(20)
    with pytest.raises(CredentialsUnavailableError, match="stopped"):
        creds.current()
    assert fetch.calls == 2


def test_background_steps_with_a_fake_clock() -> None:
    clock = Clock()
    fetch = Fetch(clock)
    creds = engine(clock, fetch)
    assert creds.next_wait() == 50.0  # fetched; waits for the advisory time
    assert fetch.calls == 1
    clock.advance(50)
    fetch.error = TransportError("down")
    wait = creds.next_wait()
    assert fetch.calls == 2 and wait is not None and 0 < wait <= 10  # backoff, capped at L/10
    clock.advance(wait)
    fetch.error = None
    assert creds.next_wait() == 50.0 and fetch.calls == 3


def test_a_forward_wall_clock_jump_refreshes_at_the_next_wake() -> None:
    """Suspend/resume: the wall clock jumps 90 s, the monotonic one does not move. The loop
    never sleeps longer than the wake interval, and at its next step it refreshes at once."""
    clock, mono = Clock(), Monotonic()
    fetch = Fetch(clock)
    creds = engine(clock, fetch, monotonic=mono, wake_interval=WAKE_INTERVAL)
    wait = creds.next_wait()
    assert wait == WAKE_INTERVAL < 50.0  # the advisory time is 50 s away; the loop wakes sooner
    clock.advance(99.5)  # the held set (100 s) is past usable; the monotonic clock stood still
    assert creds.next_wait() == WAKE_INTERVAL and fetch.calls == 2
    assert creds.current().access_key_id.endswith("2")


def test_a_wall_clock_stepped_back_does_not_make_credentials_look_younger() -> None:
    """An NTP step back by an hour: the monotonic clock still says 60 s passed since the
    credentials arrived, so they are refreshed on time and not handed out once past usable."""
    clock, mono = Clock(), Monotonic()
    fetch = Fetch(clock)
    creds = engine(clock, fetch, monotonic=mono)
    assert creds.next_wait() == 50.0
    clock.advance(-3600)
    mono.now += 60
    assert creds.next_wait() == 50.0 and fetch.calls == 2  # refreshed (advisory passed by age)
    clock.advance(1)
    mono.now += 99.5
    fetch.error = TransportError("down")  # so that current() cannot refresh on demand
    with pytest.raises(CredentialsUnavailableError):
        creds.current()  # 99.5 s old by the monotonic clock: past usable, whatever the wall says


def test_a_backoff_is_timed_on_the_monotonic_clock() -> None:
    clock, mono = Clock(), Monotonic()
    fetch = Fetch(clock)
    fetch.error = TransportError("down")
    creds = engine(clock, fetch, monotonic=mono)
    wait = creds.next_wait()
    assert wait is not None and wait > 0 and fetch.calls == 1
    clock.advance(-3600)  # a step back must not stretch the backoff by an hour
    mono.now += wait
    fetch.error = None
    assert creds.next_wait() == 50.0 and fetch.calls == 2


@pytest.mark.slow
def test_a_reader_finding_credentials_past_usable_wakes_the_loop() -> None:
    """Background mode, a real thread: the wall clock jumps past usable; the first reader that
    finds no valid credentials wakes the loop, which refreshes well before its wake interval."""
    offset = [0.0]

    def wall() -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + s(offset[0])

    fetch = Fetch(wall, lifetime=3600.0)
    creds = RefreshingCredentials(fetch, clock=wall, wake_interval=30.0)
    creds.start()
    try:
        assert creds.wait_ready(5) and fetch.calls == 1
        time.sleep(0.2)  # the loop is asleep now, for its 30 s wake interval
        offset[0] = 3599.5  # past usable (3599 s)
        with pytest.raises(CredentialsUnavailableError):
            creds.current()
        deadline = time.monotonic() + 5
        while fetch.calls < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fetch.calls == 2
        assert creds.current().expiration > wall()
    finally:
        creds.close()


@pytest.mark.slow  # waits on the clock
def test_background_thread_refreshes_and_readers_never_fetch() -> None:
    fetch = Fetch(lambda: dt.datetime.now(dt.timezone.utc), lifetime=1.0)
    creds = RefreshingCredentials(fetch)
    creds.start()
    try:
        assert creds.wait_ready(5)
        deadline = time.monotonic() + 10
        seen = set()
        while fetch.calls < 4 and time.monotonic() < deadline:
            got = creds.current()
            assert got.expiration > dt.datetime.now(dt.timezone.utc)
            seen.add(got.access_key_id)
            time.sleep(0.01)
        assert fetch.calls >= 4 and len(seen) >= 3
        assert fetch.max_concurrent == 1
    finally:
        creds.close()


@pytest.mark.slow  # waits on a clock: waits for the first backoff (about 1 s)
def test_close_interrupts_a_backoff() -> None:
    fetch = Fetch(lambda: dt.datetime.now(dt.timezone.utc))
    fetch.error = TransportError("down")
    creds = RefreshingCredentials(fetch, rng=lambda: 0.99, max_backoff=30)
    creds.start()
    deadline = time.monotonic() + 5
    while fetch.calls < 2 and time.monotonic() < deadline:  # first backoff is about 1 s
        time.sleep(0.01)
    assert fetch.calls == 2
    started = time.monotonic()
    creds.close()
    assert time.monotonic() - started < 1.0
    with pytest.raises(CredentialsUnavailableError):
        creds.current()


def test_refresh_raises_the_fetch_error_for_a_front_end() -> None:
    clock = Clock()
    fetch = Fetch(clock)
    fetch.error = AccessDeniedError("no", error_type="AccessDeniedException", status=403)
    creds = engine(clock, fetch)
    with pytest.raises(AccessDeniedError):
        creds.refresh()
    fetch.error = None
    assert creds.refresh().expiration > clock()
    assert creds.wait_ready(0)
