"""Full-jitter exponential backoff: one pure rule for every wait after a failure.

AWS's "Exponential Backoff and Jitter" (full jitter): after the n-th failure in a row, wait a
uniform draw from [0, min(cap, base * 2**(n-1))]. A floor of a twentieth of that ceiling keeps a
draw near zero from becoming a busy loop. Callers pass the random draw, so the rule is a pure
function their tests check on plain numbers.
"""

from __future__ import annotations

__all__ = ["full_jitter"]


def full_jitter(failures: int, rand: float, *, base: float, cap: float) -> float:
    """Seconds to wait after `failures` (>= 1) failures in a row; `rand` in [0, 1)."""
    ceiling = min(cap, base * 2 ** min(max(failures - 1, 0), 30))
    return max(ceiling * rand, ceiling / 20)
