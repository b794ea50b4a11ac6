"""Keeping temporary credentials fresh: a pure rule for when to refresh, and the engine around it.

The rule (`refresh_times`), for credentials received at `issued_at` that expire at
`expires_at`, lifetime L = expires_at - issued_at, jitter j in [0, 1):

    advisory lead  = min(L * (0.50 - 0.25 j), 1800 s - 840 j s)  time left when a refresh starts
    mandatory lead = min(max(L * 0.25, min(5 s, L * 0.30)), 600 s)
    usable lead    = min(1 s, L * 0.05)                           time left below which we stop
                                                                  handing them out

so a refresh starts when 50..75 % of the lifetime has passed: 15..30 minutes before expiry for
one-hour sessions, and 16..30 minutes before expiry for long lifetimes. The jitter is drawn
anew for each credential set, so that a fleet started together spreads out within a few
lifetimes: with a 3-minute jitter window (botocore's 15 minutes less 0..3), 100,000 hosts
started within 5 minutes still peaked at 355 CreateSession/s after the first hour (the naive
fixed 15 minutes: 378/s); with this 15-minute window the peak falls to about 124/s (bench/fleet.py,
docs/performance.md). A refresh becomes mandatory when a quarter of the lifetime is left (at
most botocore's 10 minutes, at least 5 seconds where the lifetime allows). The advisory lead
is never below the mandatory one, and the refresh is always after botocore's 15-minute window
opens for lifetimes of an hour or more (botocore itself would re-run us by then anyway). Why
not botocore's fixed windows: a 900-second session is inside its 15-minute window the moment
it is issued, so every call would refresh. Examples (j = 0): 5 s -> advisory at 2.5 s,
mandatory at 3.5 s; 15 min -> 7.5 min and 11.25 min; 1 h -> 30 min and 50 min; 12 h ->
11 h 30 and 11 h 50; (j -> 1): 1 h -> 45 min; 12 h -> 11 h 44.

Failed refreshes are retried with full-jitter exponential backoff (`backoff_delay`), starting
at one second and capped at min(L / 10, 60 s), so that service comes back soon after the
endpoint does without hammering it; `close()` interrupts a backoff at once.

Clock jumps. The times above are wall-clock times (the service's expiry is one), but waits are
monotonic, and the two part ways: a suspended laptop or a paused VM stops the monotonic clock
while the wall clock runs on, and an NTP step moves the wall clock alone. So the engine (1)
never sleeps longer than WAKE_INTERVAL before looking at the clocks again, (2) measures the age
of the credentials it holds by whichever clock says more time has passed since they arrived
(a wall clock stepped back cannot make them look younger than they are; one stepped forward
makes them due at once), and (3) wakes its loop at once when a reader finds the credentials
past usable. Backoffs are timed on the monotonic clock alone.

`RefreshingCredentials` is modelled on botocore's `RefreshableCredentials._refresh` and
`_protected_refresh`: one refresh at a time however many callers ask (a lock, re-checked after
taking it), the last good credentials kept while a refresh fails, and never an expired
credential handed out (`current()` raises `CredentialsUnavailableError` instead). It runs in
one of two modes:

* on demand (no `start()`): `current()` refreshes in the caller's thread, like botocore: in
  the advisory window one caller tries, the others get the current credentials at once; from
  the mandatory time on, callers wait for the one refresh;
* in the background (`start()`): a daemon thread refreshes ahead of expiry and `current()`
  only ever reads a snapshot, so request handlers never block on the token or the network.

Errors in `fatal` (by default a PIN the token refused or locked) stop all refreshing: the
session would otherwise present a refused PIN again. The credentials already held are still
handed out until they expire.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rolesanywhere_hsm.backoff import full_jitter
from rolesanywhere_hsm.credentials import Credentials
from rolesanywhere_hsm.errors import (
    CredentialsUnavailableError,
    PinIncorrectError,
    PinLockedError,
    RolesAnywhereError,
)

__all__ = [
    "RefreshTimes",
    "RefreshingCredentials",
    "WAKE_INTERVAL",
    "backoff_delay",
    "refresh_times",
]

log = logging.getLogger("rolesanywhere_hsm.refresh")

Clock = Callable[[], dt.datetime]

# The advisory lead's cap is twice botocore's 15-minute window (credentials.py:
# _advisory_refresh_timeout), less jitter, so that a fleet spreads over 14 minutes instead of 3;
# the mandatory cap is botocore's _mandatory_refresh_timeout.
ADVISORY_CAP = 1800.0
MANDATORY_CAP = 600.0
# Leads as fractions of the lifetime, and the floors for very short lifetimes.
ADVISORY_FRACTION = 0.50
ADVISORY_JITTER = 0.25
ADVISORY_CAP_JITTER = 840.0
MANDATORY_FRACTION = 0.25
MANDATORY_FLOOR = 5.0
MANDATORY_FLOOR_FRACTION = 0.30
USABLE_LEAD = 1.0
USABLE_FRACTION = 0.05
# Backoff after a failed refresh.
BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
BACKOFF_FRACTION = 0.10
# The longest the background loop sleeps before it looks at the wall clock again: after a
# suspend/resume or an NTP step the credentials may be due (or past usable) long before the
# monotonic wait computed earlier ends. A wake is a lock and a comparison: cheap.
WAKE_INTERVAL = 5.0

DEFAULT_FATAL: tuple[type[BaseException], ...] = (PinIncorrectError, PinLockedError)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class RefreshTimes:
    """When to refresh one set of credentials (see the module docstring for the rule).

    advisory <= mandatory < usable_until <= expires_at. Until `advisory` nothing happens; from
    `advisory` a refresh is attempted; from `mandatory` callers wait for it; from
    `usable_until` the credentials are no longer handed out.
    """

    advisory: dt.datetime
    mandatory: dt.datetime
    usable_until: dt.datetime
    lifetime: float

    @property
    def backoff_cap(self) -> float:
        return max(0.05, min(self.lifetime * BACKOFF_FRACTION, BACKOFF_CAP))


def refresh_times(issued_at: dt.datetime, expires_at: dt.datetime, *, jitter: float) -> RefreshTimes:
    """The refresh times for credentials issued at `issued_at` that expire at `expires_at`.

    `jitter` in [0, 1) (e.g. `random.random()`, drawn once per credentials) moves the advisory
    time later by up to 25 % of the lifetime (up to 14 minutes for long lifetimes). A lifetime
    of zero or less (the clock is ahead of
    the service's) gives times that are all already due.
    """
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), not {jitter}")
    lifetime = (expires_at - issued_at).total_seconds()
    if lifetime <= 0:
        return RefreshTimes(expires_at, expires_at, expires_at, max(lifetime, 0.0))
    advisory_lead = min(
        lifetime * (ADVISORY_FRACTION - ADVISORY_JITTER * jitter),
        ADVISORY_CAP - ADVISORY_CAP_JITTER * jitter,
    )
    mandatory_lead = min(
        max(lifetime * MANDATORY_FRACTION, min(MANDATORY_FLOOR, lifetime * MANDATORY_FLOOR_FRACTION)),
        MANDATORY_CAP,
    )
    # For lifetimes under 17 s the mandatory floor (0.3 L) can exceed the jittered lead.
    advisory_lead = max(advisory_lead, mandatory_lead)
    usable_lead = min(USABLE_LEAD, lifetime * USABLE_FRACTION)
    seconds = dt.timedelta(seconds=1)
    return RefreshTimes(
        advisory=expires_at - advisory_lead * seconds,
        mandatory=expires_at - mandatory_lead * seconds,
        usable_until=expires_at - usable_lead * seconds,
        lifetime=lifetime,
    )


def backoff_delay(failures: int, cap: float, rand: float) -> float:
    """Seconds to wait after `failures` (>= 1) failed refreshes in a row: full jitter over
    min(cap, 1 s * 2**(failures-1)), never below a twentieth of that ceiling (no busy loop)."""
    return full_jitter(failures, rand, base=BACKOFF_BASE, cap=cap)


@dataclass(frozen=True)
class _Held:
    credentials: Credentials
    times: RefreshTimes
    received_wall: dt.datetime
    received_mono: float


class RefreshingCredentials:
    """Credentials that stay fresh: `current()` always returns valid ones or raises.

    `fetch` gets new credentials (e.g. `CredentialSession.fetch`); it is only ever called by
    one thread at a time. `clock` and `rng` are for tests (a fake clock, a fixed jitter).
    """

    def __init__(
        self,
        fetch: Callable[[], Credentials],
        *,
        clock: Clock = _utcnow,
        rng: Callable[[], float] = random.random,
        max_backoff: float = BACKOFF_CAP,
        fatal: tuple[type[BaseException], ...] = DEFAULT_FATAL,
        on_refresh: Callable[[Credentials], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wake_interval: float = WAKE_INTERVAL,
    ) -> None:
        self._fetch = fetch
        self._wall_clock = clock
        self._monotonic = monotonic
        self._wake_interval = wake_interval

        self._rng = rng
        self._max_backoff = max_backoff
        self._fatal_types = fatal
        self._on_refresh = on_refresh
        self._held: _Held | None = None  # replaced whole: readers need no lock
        self._lock = threading.Lock()  # one refresh at a time
        self._failures = 0
        self._next_attempt: float | None = None  # monotonic: a wall-clock step cannot stretch it
        self._last_error: BaseException | None = None
        self._fatal: BaseException | None = None
        self._closed = threading.Event()
        self._changed = threading.Condition()
        self._wake = threading.Event()  # set to end the background loop's sleep early
        self._thread: threading.Thread | None = None
        self.refresh_count = 0

    # -- readers -----------------------------------------------------------------------------

    def current(self) -> Credentials:
        """Valid credentials (at least `usable_until` away from expiry) or
        `CredentialsUnavailableError`. In background mode this never blocks."""
        held = self._held
        now = self._clock()
        if self._thread is None and not self._closed.is_set() and self._fatal is None:
            if held is None or now >= held.times.mandatory:
                with self._lock:
                    self._refresh_locked()
            elif now >= held.times.advisory and self._lock.acquire(blocking=False):
                try:
                    self._refresh_locked()
                finally:
                    self._lock.release()
            held = self._held
            now = self._clock()
        if held is not None and now < held.times.usable_until:
            return held.credentials
        if self._thread is not None and held is not None and self._next_attempt is None:
            # Past usable with no backoff running (a clock jump?): the loop refreshes now, not
            # at its next wake. In a backoff the loop already wakes at its end: requests
            # answered 503 during an outage must not spin it.
            self._wake.set()
        error = self._unavailable()
        raise error from (self._fatal or self._last_error)

    @property
    def last_error(self) -> BaseException | None:
        """The error of the last failed refresh (None after a success)."""
        return self._last_error

    @property
    def fatal_error(self) -> BaseException | None:
        """The error that stopped refreshing for good, if any."""
        return self._fatal

    def refresh_times(self) -> RefreshTimes | None:
        held = self._held
        return held.times if held else None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until credentials are held or refreshing stopped for good; True if held."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._held is not None or self._fatal is not None or self._closed.is_set(),
                timeout,
            )
        return self._held is not None

    # -- refreshing --------------------------------------------------------------------------

    def refresh(self) -> Credentials:
        """Fetch now (waiting for a refresh in progress), whatever the times say; raises the
        fetch's error. For a front end's first fetch, so that errors reach the person."""
        with self._lock:
            if self._fatal is not None:
                raise self._fatal
            credentials = self._fetch_locked()
        return credentials

    def start(self) -> RefreshingCredentials:
        """Refresh in a background daemon thread from now on; `current()` stops fetching."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rah-refresh", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop refreshing; interrupts a backoff or a wait at once (a fetch in progress is
        bounded by its own deadline)."""
        self._closed.set()
        self._wake.set()
        with self._changed:
            self._changed.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> RefreshingCredentials:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_wait(self) -> float | None:
        """One step of the background loop: refresh if due, then the seconds to wait before
        the next step (None: stop), never more than the wake interval (the clocks are looked
        at again then). Public so that tests can drive the loop with a fake clock."""
        if self._closed.is_set() or self._fatal is not None:
            return None
        with self._lock:
            self._refresh_locked()
            if self._fatal is not None:
                return None
            wait = self._seconds_until_due()
        return min(max(0.0, wait), self._wake_interval)

    def _run(self) -> None:
        while True:
            wait = self.next_wait()
            if wait is None:
                return
            self._wake.wait(wait)
            self._wake.clear()
            if self._closed.is_set():
                return

    def _clock(self) -> dt.datetime:
        """The wall clock, but never earlier than the held credentials' arrival plus the
        monotonic time since: a wall clock stepped back cannot make them look younger."""
        now = self._wall_clock()
        held = self._held
        if held is not None:
            aged = held.received_wall + dt.timedelta(seconds=self._monotonic() - held.received_mono)
            if aged > now:
                return aged
        return now

    def _seconds_until_due(self) -> float:
        """Until the next fetch may happen: the advisory time, or the end of a backoff."""
        held = self._held
        wait = (held.times.advisory - self._clock()).total_seconds() if held is not None else 0.0
        if self._next_attempt is not None:
            wait = max(wait, self._next_attempt - self._monotonic())
        return wait

    def _refresh_locked(self) -> None:
        """Under self._lock: re-check (another caller may just have refreshed), then fetch
        unless a backoff is running. Failures are recorded, never raised."""
        if self._closed.is_set() or self._fatal is not None:
            return
        now = self._clock()
        held = self._held
        if held is not None and now < held.times.advisory:
            return
        if self._next_attempt is not None and self._monotonic() < self._next_attempt:
            return
        try:
            self._fetch_locked()
        except Exception as exc:  # noqa: BLE001 (recorded; readers get it as the cause)
            self._record_failure(exc)

    def _fetch_locked(self) -> Credentials:
        try:
            credentials = self._fetch()
        except BaseException as exc:
            if isinstance(exc, self._fatal_types):
                self._fatal = exc
                self._last_error = exc
                log.error("refreshing stopped for good: %s", _describe(exc))
                with self._changed:
                    self._changed.notify_all()
            raise
        now = self._wall_clock()
        times = refresh_times(now, credentials.expiration, jitter=self._rng() % 1.0)
        if now >= times.usable_until:
            raise CredentialsUnavailableError(
                f"The service issued credentials that expire at {credentials.expiration:%Y-%m-%dT%H:%M:%SZ}, "
                "already past by this machine's clock.",
                hint="Check the machine's clock (NTP).",
            )
        self._held = _Held(credentials, times, now, self._monotonic())
        self._failures = 0
        self._next_attempt = None
        self._last_error = None
        self.refresh_count += 1
        log.debug("credentials refreshed; next refresh at %s", times.advisory.isoformat())
        with self._changed:
            self._changed.notify_all()
        if self._on_refresh is not None:
            self._on_refresh(credentials)
        return credentials

    def _record_failure(self, exc: Exception) -> None:
        self._last_error = exc
        if self._fatal is not None:
            return
        self._failures += 1
        held = self._held
        cap = min(held.times.backoff_cap if held else self._max_backoff, self._max_backoff)
        delay = backoff_delay(self._failures, cap, self._rng())
        self._next_attempt = self._monotonic() + delay
        state = "keeping the current credentials" if held and self._clock() < held.times.usable_until else "no valid credentials"
        log.warning("refresh failed (%s; %s); retrying in %.1f s", _describe(exc), state, delay)

    def _unavailable(self) -> CredentialsUnavailableError:
        cause = self._fatal or self._last_error
        if self._closed.is_set() and cause is None:
            return CredentialsUnavailableError("No credentials: the credential refresher is closed.")
        if cause is None:
            return CredentialsUnavailableError(
                "No valid credentials yet: the first refresh has not finished.",
                hint="Wait a moment and ask again.",
            )
        if self._fatal is not None:
            return CredentialsUnavailableError(
                f"No valid credentials, and refreshing has stopped: {_describe(cause)}",
                hint="Fix the cause and restart.",
            )
        return CredentialsUnavailableError(
            f"No valid credentials: the last refresh failed: {_describe(cause)}",
            hint="Refreshing is retried with backoff; check the endpoint and the token.",
        )


def _describe(exc: BaseException) -> str:
    """A one-line description fit for logs: our errors' messages carry no secrets; other
    exceptions are named by class only (their text might)."""
    if isinstance(exc, RolesAnywhereError):
        return exc.message
    return f"unexpected {type(exc).__name__}"
