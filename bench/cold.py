"""Cold `credential-process` (a fresh process per credential, as the AWS SDK runs it) beside the
floor script doing the same work (bench/floor.py), a cache hit beside `python -c pass`, and the
best-known Python peer (`iam-rolesanywhere-session`) over TLS beside ours and the floor.

Each variant runs once per round, interleaved with its floor, after warm-up rounds.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

from bench.common import (PYTHON, REPO, Material, Row, alternate, child_env, emulator, load_average,
                          rows_from_samples, timed_run)

SECTION = "cold start"
FLOOR = str(REPO / "bench" / "floor.py")
CLEAN = " (clean venv)"  # the suffix of rows timed with runtime_venv()'s interpreter
COLD_TARGET = 1.3
CACHE_TARGET = 3.0

PEER_SCRIPT = """
import json, sys
from iam_rolesanywhere_session import IAMRolesAnywhereSession
endpoint, ta, profile, role, cert, key, ca = sys.argv[1:]
session = IAMRolesAnywhereSession(profile_arn=profile, role_arn=role, trust_anchor_arn=ta,
    certificate=cert, private_key=key, region=ta.split(":")[3], endpoint=endpoint, verify=ca)
c = session.get_refreshable_credentials().get_frozen_credentials()
print(json.dumps({"Version": 1, "AccessKeyId": c.access_key, "SecretAccessKey": c.secret_key,
                  "SessionToken": c.token}))
"""


def peer_path() -> str | None:
    """Where iam-rolesanywhere-session is importable from: BENCH_PEER_PATH (a `pip install
    --target` directory, so the peer never enters the project's environment) or this Python."""
    extra = os.environ.get("BENCH_PEER_PATH")
    if extra and (Path(extra) / "iam_rolesanywhere_session").is_dir():
        return extra
    return "" if importlib.util.find_spec("iam_rolesanywhere_session") else None


def run(runs: int, warmup: int, python: str = PYTHON, suffix: str = "") -> list[Row]:
    """Every row, timed with `python` (the development environment's, or a clean virtualenv's:
    then `suffix` is CLEAN, added to each row's name, and the peer is left out)."""
    rows: list[Row] = []
    ours = [python, "-m", "rolesanywhere_hsm", "credential-process"]
    with tempfile.TemporaryDirectory(prefix="rah-bench-") as tmp:
        material = Material.create(Path(tmp))
        env = child_env()
        with emulator(material) as emu:
            floor_args = [python, FLOOR, emu.url, emu.trust_anchor_arn, emu.profile_arn, emu.role_arn]
            variants = {
                "file P-256: floor.py": lambda: timed_run([*floor_args, "file", str(material.cert_file),
                                                           str(material.key_file)], env),
                "file P-256: credential-process": lambda: timed_run(
                    [*ours, "--certificate", str(material.cert_file), "--private-key", str(material.key_file),
                     *emu.args], env),
            }
            pairs = {"file P-256: credential-process": ("file P-256: floor.py", COLD_TARGET)}
            if material.token is not None:
                token, tenv = material.token, child_env(**material.token_env())
                for label, name in (("ec", "SoftHSM P-256"), ("rsa", "SoftHSM RSA-2048")):
                    uri = token.uri_for(label, type="cert", module=True)
                    variants[f"{name}: floor.py"] = (lambda label=label: timed_run(
                        [*floor_args, "pkcs11", token.module, token.label, label], tenv))
                    variants[f"{name}: credential-process"] = (lambda uri=uri: timed_run(
                        [*ours, "--certificate", uri, *emu.args], tenv))
                    pairs[f"{name}: credential-process"] = (f"{name}: floor.py", COLD_TARGET)
            samples = alternate(variants, runs, warmup)
            rows += rows_from_samples(SECTION, samples, pairs)
            rows += _cache_hit(material, emu.args, runs, warmup, python, ours)
        if not suffix:
            rows += _peer(material, runs, warmup)
    load = load_average()
    for row in rows:
        row.name += suffix
        row.vs = row.vs and row.vs + suffix
        row.extra["load"] = load
    return rows


def _cache_hit(material: Material, emu_args: list[str], runs: int, warmup: int, python: str,
               ours: list[str]) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="rah-bench-cache-") as cache_dir:
        env = child_env(RAH_CACHE_DIR=cache_dir)
        args = [*ours, "--cache", "--certificate", str(material.cert_file), "--private-key",
                str(material.key_file), *emu_args]
        timed_run(args, env)  # warms the cache: every later run is a hit
        samples = alternate({
            "python -c pass": lambda: timed_run([python, "-c", "pass"], env),
            "cache hit: credential-process --cache": lambda: timed_run(args, env),
        }, runs, warmup)
    return rows_from_samples("cache hit", samples,
                             {"cache hit: credential-process --cache": ("python -c pass", CACHE_TARGET)})


def _peer(material: Material, runs: int, warmup: int) -> list[Row]:
    """Over TLS (the peer only speaks HTTPS), file P-256 key: floor, ours, peer."""
    where = peer_path()
    if where is None:
        print("iam-rolesanywhere-session is not installed (pip install --target DIR it, then "
              "BENCH_PEER_PATH=DIR): peer rows skipped", file=sys.stderr)
        return []
    with emulator(material, tls=True) as emu:
        ca = str(material.ca_file)
        env = child_env(SSL_CERT_FILE=ca)  # the floor's http.client trusts the test CA this way
        peer_env = child_env()
        if where:
            peer_env["PYTHONPATH"] += os.pathsep + where
        host = emu.url.removeprefix("https://")
        cert, key = str(material.cert_file), str(material.key_file)
        samples = alternate({
            "TLS file P-256: floor.py": lambda: timed_run(
                [PYTHON, FLOOR, emu.url, emu.trust_anchor_arn, emu.profile_arn, emu.role_arn,
                 "file", cert, key], env),
            "TLS file P-256: credential-process": lambda: timed_run(
                [PYTHON, "-m", "rolesanywhere_hsm", "credential-process", "--certificate", cert,
                 "--private-key", key, "--ca-bundle", ca, *emu.args], env),
            "TLS file P-256: iam-rolesanywhere-session": lambda: timed_run(
                [PYTHON, "-c", PEER_SCRIPT, host, emu.trust_anchor_arn, emu.profile_arn,
                 emu.role_arn, cert, key, ca], peer_env),
        }, runs, warmup)
    rows = rows_from_samples("peer (TLS)", samples,
                             {"TLS file P-256: credential-process": ("TLS file P-256: floor.py", COLD_TARGET)})
    floor = rows[0].median
    rows[2].vs, rows[2].ratio = rows[0].name, rows[2].median / floor  # type: ignore[operator]
    rows[2].extra["cpu_ratio"] = round(rows[2].extra["cpu_ms"] / rows[0].extra["cpu_ms"], 2)
    return rows
