"""Charts for docs/performance.md, drawn from one run's rows with matplotlib (the `bench` extra:
`pip install '.[bench]'`; never needed at run time): cold start of ours, the floor and the peer,
and `serve` latency against concurrency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import Row


def write_charts(rows: list[Row], directory: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install '.[bench]'): no charts")
        return []
    directory.mkdir(parents=True, exist_ok=True)
    plt.rcParams["svg.hashsalt"] = "rolesanywhere-hsm"  # stable SVG ids: diffs show real changes
    written = []
    cold = [r for r in rows if r.section in ("cold start", "peer (TLS)", "cache hit") and r.unit == "ms"]
    if cold:
        fig, ax = plt.subplots(figsize=(8, 0.42 * len(cold) + 1.2))
        names = [r.name for r in cold][::-1]
        values = [r.median or 0 for r in cold][::-1]
        colours = ["#4c72b0" if "credential-process" in n else "#dd8452" if "iam-roles" in n else "#999999"
                   for n in names]
        ax.barh(names, values, color=colours)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.0f}", va="center", fontsize=8)
        ax.set_xlabel("median wall time per credential, ms (one process each)")
        ax.set_title("Cold start: ours (blue), floor (grey), peer (orange)")
        written.append(_save(plt, fig, directory / "cold-start.svg"))
    serve = [r for r in rows if r.section == "serve"]
    if serve:
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
        for target in ("floor (bare asyncio)", "HTTP layer, trivial app", "serve IMDS credential GET",
                       "serve container credential GET"):
            points = sorted((r.extra["clients"], r.extra["p50_ms"], r.extra["p99_ms"], r.median)
                            for r in serve if r.name.startswith(target))
            if not points:
                continue
            clients = [p[0] for p in points]
            left.plot(clients, [p[3] for p in points], marker="o", label=target)
            right.plot(clients, [p[2] for p in points], marker="o", label=target)
        left.set_xlabel("keep-alive clients")
        left.set_ylabel("requests/s")
        right.set_xlabel("keep-alive clients")
        right.set_ylabel("p99 latency, ms")
        left.legend(fontsize=7)
        fig.suptitle("serve: credential GETs against concurrency")
        written.append(_save(plt, fig, directory / "serve-latency.svg"))
    return written


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None})  # no date: the same figures give the same file
    plt.close(fig)
    return path
