"""A time budget for one call to the service, as an absolute point on the monotonic clock.

A credential helper that hangs holds every `aws` command on the host with it, so a run gets one
budget for all its attempts (connect, TLS, sending, waiting for the answer, backoff between
attempts) instead of per-operation timeouts that restart with every byte a slow server drips.
An absolute deadline (not a duration) is what gets passed down, so that every layer measures
against the same instant. Pure and cheap to import. `--timeout` and RAH_TIMEOUT are read by the option table
(rolesanywhere_hsm.settings) and checked with `check_timeout`.
"""

from __future__ import annotations

import math
import time

from rolesanywhere_hsm.errors import SETTING, UsageError
from rolesanywhere_hsm.record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a cache hit
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DEFAULT_TIMEOUT", "Deadline", "check_timeout"]

DEFAULT_TIMEOUT = 20.0
# A day: far beyond any sane budget, small enough that arithmetic on it stays exact.
MAX_TIMEOUT = 86400.0


def check_timeout(seconds: float, *, setting: str = "timeout") -> float:
    """`seconds` if it is a usable budget (finite, above zero), else a UsageError about
    `setting` (an option-table name; the front end names it as its user gave it)."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds) \
            or not 0 < seconds <= MAX_TIMEOUT:
        raise UsageError(
            f"{SETTING} {seconds!r} is not a usable time budget.",
            hint=f"Give a number of seconds above 0 and at most {MAX_TIMEOUT:.0f} (default {DEFAULT_TIMEOUT:g}).",
            setting=setting,
        )
    return float(seconds)


class Deadline(Record):
    """An instant on `clock` (time.monotonic by default) by which the work must be over.

    `budget` is the length it was created with, kept for messages ("the 20 s budget").
    A plain frozen class (rolesanywhere_hsm.record), as it is imported on a cache hit.
    """

    _compared = ("at", "budget")
    __slots__ = ("at", "budget", "clock")

    at: float
    budget: float
    clock: Callable[[], float]

    def __init__(self, at: float, budget: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._set(at=at, budget=budget, clock=clock)

    @classmethod
    def after(cls, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> Deadline:
        seconds = check_timeout(seconds)
        return cls(clock() + seconds, seconds, clock)

    def remaining(self) -> float:
        """Seconds left, never below zero."""
        return max(0.0, self.at - self.clock())

    def expired(self) -> bool:
        return self.clock() >= self.at

    def clamp(self, seconds: float | None) -> float:
        """A timeout for one blocking operation: `seconds` (None: no own limit) cut to what is left."""
        left = self.remaining()
        return left if seconds is None else min(seconds, left)

    def describe(self) -> str:
        """`2 s`, `0.5 s`: the budget as messages show it."""
        return f"{self.budget:g} s"
