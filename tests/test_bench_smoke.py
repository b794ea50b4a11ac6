"""The bench keeps working: `python -m bench --smoke` (few iterations, no thresholds, what CI
runs) prints the table and writes JSON with a row for every section."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.softhsm
def test_bench_smoke_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--json", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    header = next(line for line in done.stdout.splitlines() if line.startswith("section"))
    for column in ("median", "p90", "ratio", "target"):
        assert column in header
    report = json.loads(out.read_text())
    assert report["smoke"] is True
    sections = {row["section"] for row in report["rows"]}
    assert {"cold start", "cache hit", "token calls", "emulator", "session layer", "serve",
            "imports", "fleet"} <= sections
    floor = next(r for r in report["rows"] if r["name"] == "file P-256: credential-process")
    assert floor["vs"] == "file P-256: floor.py" and floor["ratio"] > 0
    spy = [r for r in report["rows"] if r["section"] == "token calls"]
    assert all(r["extra"]["logins"] == 1 and r["extra"]["signatures"] == 1 for r in spy)
    assert all(r["extra"]["errors"] == 0 for r in report["rows"] if r["section"] == "serve")
