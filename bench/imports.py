"""Import cost of the `credential-process` path: `python -X importtime` over one real run (a
file key against the emulator), the total and the top offenders: each top-level package with
the self time of its own modules (so nothing is counted twice)."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from bench.common import PYTHON, Material, Row, child_env, emulator

SECTION = "imports"


def parse_importtime(stderr: str) -> dict[str, float]:
    """Microseconds per top-level package, from `-X importtime` lines: the *self* time of every
    module, added to its own top-level package (httpx imported from inside rolesanywhere_hsm
    counts for httpx, `email` imported by httpx for email), so nothing is counted twice."""
    totals: dict[str, float] = defaultdict(float)
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \| *(\S+)", line)
        if match:
            totals[match.group(2).split(".")[0]] += int(match.group(1))
    return dict(totals)


def run(runs: int, warmup: int, python: str = PYTHON, suffix: str = "") -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="rah-bench-") as tmp:
        material = Material.create(Path(tmp), softhsm=False)
        with emulator(material) as emu:
            args = [python, "-X", "importtime", "-m", "rolesanywhere_hsm", "credential-process",
                    "--certificate", str(material.cert_file), "--private-key", str(material.key_file), *emu.args]
            best: dict[str, float] | None = None
            for _ in range(max(1, min(runs, 5)) + warmup):  # the fastest run: least noise
                done = subprocess.run(args, env=child_env(), capture_output=True, text=True, timeout=60)
                if done.returncode != 0:
                    raise SystemExit(f"credential-process failed: {done.stderr[-600:]}")
                totals = parse_importtime(done.stderr)
                if best is None or sum(totals.values()) < sum(best.values()):
                    best = totals
    assert best is not None
    rows = [Row(SECTION, f"all imports (credential-process, file key){suffix}", sum(best.values()) / 1000)]
    for name, micros in sorted(best.items(), key=lambda kv: -kv[1])[:10]:
        rows.append(Row(SECTION, f"import {name}{suffix}", micros / 1000))
    return rows
