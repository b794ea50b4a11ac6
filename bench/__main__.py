"""`python -m bench`: every benchmark of rolesanywhere-hsm, one table, one JSON file.

    python -m bench                      # full run (a few minutes), docs/performance.md's figures
    python -m bench --smoke              # few iterations, no thresholds, < 60 s (what CI runs)
    python -m bench --only cold,serve    # some sections: cold, tokens, throughput, serve,
                                         # imports, fleet
    python -m bench --no-clean-venv      # cold and imports in this environment only
    python -m bench --json out.json --charts docs/performance
    python -m bench --replot bench/results/latest.json --charts docs/performance   # charts only
    python -m bench --markdown bench/results/latest.json    # the table for docs/performance.md

Sections: cold `credential-process` beside the floor script and a cache hit beside
`python -c pass` (cold), PKCS#11 calls per credential and the virtual YubiKey with hardware
latencies (tokens), the emulator and the session layer in requests per second (throughput),
`serve` under 1/10/50 keep-alive clients beside a bare asyncio server (serve), the import cost of
`credential-process` (imports), and a day of CreateSession calls from a fleet (fleet).
The cold and imports sections run twice in a full run: with this development environment's
interpreter, and with a clean virtualenv holding only the runtime dependencies (rows marked
"(clean venv)"; bench.common.runtime_venv makes it once, or BENCH_CLEAN_PYTHON names one), which
is what the start-up targets are about. Ratios compare variants measured interleaved in the same
run: on a noisy machine they are what counts, the CPU-time ratios most of all. Targets are printed, never enforced (the exit code is 0 whatever the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import REPO, Row

SECTIONS = ("cold", "tokens", "throughput", "serve", "imports", "fleet")
NOTE_KEYS = ("cpu_ms", "cpu_ratio", "p50_ms", "p99_ms", "server_cpu_us_per_request", "logins", "signatures", "sessions",
             "verify_per_credential", "general_authenticate_per_credential", "apdus_per_credential", "median_ms", "load")


def _plan(smoke: bool, runs: int | None, clean: bool) -> dict[str, Callable[[], list[Row]]]:
    from bench import cold, fleet, imports, serve, throughput, tokens
    from bench.common import runtime_venv

    n = runs or (1 if smoke else 15)
    warmup = 0 if smoke else 2

    def both(section: Callable[..., list[Row]], *args: int) -> list[Row]:
        rows = section(*args)
        return rows + section(*args, runtime_venv(), cold.CLEAN) if clean else rows

    return {
        "cold": lambda: both(cold.run, n, warmup),
        "tokens": lambda: tokens.spy_rows(n) + tokens.yubikey_rows(1 if smoke else max(3, n // 3), warmup),
        "throughput": lambda: throughput.emulator_rows(20 if smoke else 400)
        + throughput.session_rows(10 if smoke else 200),
        "serve": lambda: serve.run(1 if smoke else 3, [1, 10] if smoke else [1, 10, 50], python_load=smoke,
                                   rounds=1 if smoke else 5),
        "imports": lambda: both(imports.run, 1 if smoke else 5, 0 if smoke else 1),
        "fleet": lambda: fleet.rows([1_000] if smoke else [10_000, 100_000], find_limit=not smoke),
    }


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    if unit in ("req/s", "hosts", "calls") or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def print_table(rows: list[Row]) -> None:
    print(f"{'section':<26} {'what':<62} {'median':>10} {'p90':>9} {'unit':<6} {'ratio':>6} "
          f"{'target':<12} {'met':<4} notes")
    for r in rows:
        notes = ", ".join(f"{k}={r.extra[k]}" for k in NOTE_KEYS if k in r.extra)
        met = "" if r.met is None else ("yes" if r.met else "NO")
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}x"
        print(f"{r.section[:26]:<26} {r.name[:62]:<62} {_fmt(r.median, r.unit):>10} {_fmt(r.p90, r.unit):>9} "
              f"{r.unit:<6} {ratio:>6} {r.target or '':<12} {met:<4} {notes}")


def print_markdown(rows: list[Row]) -> None:
    """The rows as a Markdown table, for docs/performance.md."""
    print("| section | what | median | p90 | unit | ratio (vs) | target | met | notes |")
    print("|---|---|---:|---:|---|---|---|---|---|")
    for r in rows:
        notes = ", ".join(f"{k} {r.extra[k]}" for k in NOTE_KEYS if k in r.extra and k != "load")
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}x ({r.vs})"
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        print(f"| {r.section} | {r.name} | {_fmt(r.median, r.unit)} | {_fmt(r.p90, r.unit)} | {r.unit} | "
              f"{ratio} | {r.target or ''} | {met} | {notes} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="few iterations, no thresholds (CI)")
    parser.add_argument("--only", help=f"comma-separated sections ({', '.join(SECTIONS)})")
    parser.add_argument("--runs", type=int, help="rounds per cold-start variant (default 15; smoke 1)")
    parser.add_argument("--no-clean-venv", action="store_true",
                        help="time cold and imports in this environment only (a smoke run never uses the clean venv)")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "latest.json",
                        help="where to write the figures (default bench/results/latest.json)")
    parser.add_argument("--charts", type=Path, help="write SVG charts here (needs matplotlib: "
                        "pip install '.[bench]')")
    parser.add_argument("--replot", type=Path, metavar="JSON",
                        help="measure nothing: draw the charts (--charts) from a JSON file written before")
    parser.add_argument("--markdown", type=Path, metavar="JSON",
                        help="measure nothing: print a JSON file written before as a Markdown table")
    args = parser.parse_args(argv)
    if args.markdown:
        print_markdown([Row(**row) for row in json.loads(args.markdown.read_text())["rows"]])
        return 0
    if args.replot:
        if not args.charts:
            parser.error("--replot needs --charts DIR")
        from bench.charts import write_charts

        for path in write_charts([Row(**row) for row in json.loads(args.replot.read_text())["rows"]], args.charts):
            print(f"chart written to {path}")
        return 0
    wanted = SECTIONS if not args.only else tuple(s.strip() for s in args.only.split(","))
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    plan = _plan(args.smoke, args.runs, clean=not (args.smoke or args.no_clean_venv))
    rows: list[Row] = []
    timings: dict[str, float] = {}
    for name in wanted:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        rows += plan[name]()
        timings[name] = round(time.perf_counter() - start, 1)
    print_table(rows)
    report: dict[str, Any] = {
        "smoke": args.smoke,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform(), "load_average": os.getloadavg()},
        "section_seconds": timings,
        "rows": [r.as_dict() for r in rows],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"figures written to {args.json}")
    if args.charts:
        from bench.charts import write_charts

        for path in write_charts(rows, args.charts):
            print(f"chart written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
