"""Fleet simulation: how many CreateSession calls per second a fleet of hosts makes over a day.

IAM Roles Anywhere allows 10 CreateSession requests per second per account and region. Each
simulated host starts at a random moment within `--start-window` seconds (a deployment rolling
out), fetches one-hour credentials, and refreshes them when the refresh rule says; every fetch
is one CreateSession. The same fleet (same start times) is run under two rules:

- ours: `rolesanywhere_hsm.refresh.refresh_times` (lead scaled to the lifetime, with jitter
  drawn anew for each credential set);
- naive: refresh at a fixed 15 minutes before expiry (what a helper with botocore's fixed window
  and no jitter does).

It prints, for each fleet size and rule: the peak calls in any one second over the day, the peak
after the first lifetime (once the start-up burst is over), and the mean rate; then, for our rule,
the largest fleet whose calls stay under the limit after start-up. Pure simulation: no process,
token or network is involved.

    python -m bench --only fleet     # or, alone: python -m bench.fleet [--hosts 10000 100000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

DAY = 86_400
LIFETIME = 3_600
RATE_LIMIT = 10  # CreateSession per second per account and region (the service's default quota)
_EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

# A rule: (issued_at, lifetime, rng) -> seconds after issue at which the next fetch happens.
Rule = Callable[[float, float, random.Random], float]


def ours(issued_at: float, lifetime: float, rng: random.Random) -> float:
    from rolesanywhere_hsm.refresh import refresh_times

    issued = _EPOCH + dt.timedelta(seconds=issued_at)
    times = refresh_times(issued, issued + dt.timedelta(seconds=lifetime), jitter=rng.random())
    return (times.advisory - issued).total_seconds()


def naive(issued_at: float, lifetime: float, rng: random.Random) -> float:
    return lifetime - 900.0


RULES: dict[str, Rule] = {"ours": ours, "naive": naive}


@dataclass(frozen=True)
class FleetResult:
    rule: str
    hosts: int
    calls: int
    peak_per_second: int
    steady_peak_per_second: int  # after the first lifetime: the start-up burst is over
    late_peak_per_second: int  # over the second half of the day: how far the fleet has spread
    mean_per_second: float


def simulate(hosts: int, rule: Rule, name: str, *, start_window: float, seed: int,
             lifetime: float = LIFETIME, horizon: float = DAY) -> FleetResult:
    """Every fetch of every host over `horizon` seconds, binned by second."""
    rng = random.Random(seed)
    starts = [rng.uniform(0, start_window) for _ in range(hosts)]
    bins = [0] * (int(horizon) + 1)
    calls = 0
    for start in starts:
        t = start
        while t < horizon:
            bins[int(t)] += 1
            calls += 1
            t += max(1.0, rule(t, lifetime, rng))
    steady = bins[int(lifetime + start_window):]
    late = bins[int(horizon / 2):]
    return FleetResult(name, hosts, calls, max(bins), max(steady, default=0), max(late, default=0),
                       round(calls / horizon, 3))


def hosts_under_limit(rule: Rule, *, start_window: float, seed: int, low: int = 1_000,
                      high: int = 200_000) -> int:
    """The largest fleet (to within 1 %) whose steady-state peak stays at or under the limit."""
    def ok(n: int) -> bool:
        return simulate(n, rule, "probe", start_window=start_window, seed=seed).steady_peak_per_second <= RATE_LIMIT

    if not ok(low):
        return 0
    while high - low > low // 100:
        middle = (low + high) // 2
        low, high = (middle, high) if ok(middle) else (low, middle)
    return low


def run(hosts: list[int], start_window: float, seed: int, find_limit: bool) -> dict[str, object]:
    results = [simulate(n, RULES[name], name, start_window=start_window, seed=seed)
               for n in hosts for name in RULES]
    report: dict[str, object] = {"start_window_s": start_window, "lifetime_s": LIFETIME,
                                 "results": [asdict(r) for r in results]}
    print(f"fleet over one day, one-hour sessions, hosts started within {start_window:.0f} s")
    print(f"{'hosts':>8} {'rule':>6} {'calls':>9} {'peak/s':>7} {'peak/s after 1st hour':>22} "
          f"{'peak/s last 12 h':>17} {'mean/s':>7}")
    for r in results:
        print(f"{r.hosts:8d} {r.rule:>6} {r.calls:9d} {r.peak_per_second:7d} "
              f"{r.steady_peak_per_second:22d} {r.late_peak_per_second:17d} {r.mean_per_second:7.2f}")
    if find_limit:
        for name, rule in RULES.items():
            limit = hosts_under_limit(rule, start_window=start_window, seed=seed)
            report[f"hosts_under_{RATE_LIMIT}_per_s_{name}"] = limit
            print(f"largest fleet under {RATE_LIMIT}/s after start-up, rule {name}: {limit}")
    return report


def rows(hosts: list[int], *, find_limit: bool, start_window: float = 300.0, seed: int = 7) -> list[Any]:
    """The figures as bench rows (peak CreateSession/s after the first hour, against the naive
    rule's, and the largest fleet under the limit)."""
    from bench.common import Row

    report = run(hosts, start_window, seed, find_limit)
    results = report["results"]
    out = []
    for r in results:  # type: ignore[union-attr]
        row = Row("fleet", f"{r['hosts']} hosts, rule {r['rule']}: peak CreateSession/s after 1st hour",
                  float(r["steady_peak_per_second"]), unit="req/s", extra=dict(r))
        if r["rule"] == "ours":
            naive = next(n for n in results if n["hosts"] == r["hosts"] and n["rule"] == "naive")  # type: ignore[union-attr]
            row.vs = f"{r['hosts']} hosts, rule naive: peak CreateSession/s after 1st hour"
            row.ratio = r["steady_peak_per_second"] / max(naive["steady_peak_per_second"], 1)
        out.append(row)
    for name in RULES:
        key = f"hosts_under_{RATE_LIMIT}_per_s_{name}"
        if key in report:
            out.append(Row("fleet", f"largest fleet under {RATE_LIMIT} CreateSession/s, rule {name}",
                           float(report[key]), unit="hosts"))  # type: ignore[arg-type]
    return out


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--start-window", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-limit-search", action="store_true")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    report = run(args.hosts, args.start_window, args.seed, not args.no_limit_search)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return report


if __name__ == "__main__":
    main()
