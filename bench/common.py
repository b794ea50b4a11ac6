"""What every bench section shares: timing with alternation, statistics, result rows, and the
test material (a CA, a file key, a SoftHSM token, an emulator process) built in a temp dir.

A section returns a list of `Row`s; `python -m bench` prints them as one table and writes them
as JSON. Times are in milliseconds, rates per second; `ratio` is to the row named in `vs`
(measured in the same run, interleaved, so that noise from other work on the machine falls on
both alike).
"""

from __future__ import annotations

import os
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The interpreter the timed processes run (BENCH_PYTHON: e.g. a clean virtualenv with only the
# runtime dependencies, to time what users install rather than this development environment).
PYTHON = os.environ.get("BENCH_PYTHON", sys.executable)
PIN = "bench-pin-1234"
SO_PIN = "bench-so-5678"


@dataclass
class Row:
    section: str
    name: str
    median: float | None = None  # ms (or the unit)
    p90: float | None = None
    unit: str = "ms"
    vs: str | None = None  # name of the row this one is compared with
    ratio: float | None = None
    target: str | None = None  # e.g. "<= 1.3x"
    met: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def p90(samples: Sequence[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]


def rows_from_samples(section: str, samples: dict[str, tuple[list[float], list[float]]],
                      pairs: dict[str, tuple[str, float]]) -> list[Row]:
    """One row per variant (wall-time median and p90; CPU median and ratio in `extra`); `pairs`
    maps a variant to (its floor, the highest ratio allowed)."""
    rows = []
    for name, (wall, cpu) in samples.items():
        row = Row(section, name, statistics.median(wall), p90(wall),
                  extra={"n": len(wall), "cpu_ms": round(statistics.median(cpu), 1)})
        if name in pairs:
            floor, limit = pairs[name]
            row.vs = floor
            row.ratio = row.median / statistics.median(samples[floor][0])  # type: ignore[operator]
            row.extra["cpu_ratio"] = round(statistics.median(cpu) / statistics.median(samples[floor][1]), 2)
            row.target = f"<= {limit:g}x"
            row.met = row.ratio <= limit
        rows.append(row)
    return rows


_PYCACHE: str | None = None


def _pycache() -> str:
    """A bytecode cache for this bench run, outside the checkout (removed at exit)."""
    global _PYCACHE
    if _PYCACHE is None:
        import atexit
        import shutil
        import tempfile

        _PYCACHE = tempfile.mkdtemp(prefix="rah-bench-pycache-")
        atexit.register(shutil.rmtree, _PYCACHE, ignore_errors=True)
    return _PYCACHE


def child_env(**extra: str) -> dict[str, str]:
    """os.environ without AWS_/RAH_ settings, with this checkout first on the path.

    Bytecode is written and reused (in a cache directory of this run, PYTHONPYCACHEPREFIX),
    even where PYTHONDONTWRITEBYTECODE is set: an installed package has its .pyc files, and
    compiling our sources on every run would add 20 to 30 ms of CPU to every process timed.
    The warm-up rounds fill the cache.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAH_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = _pycache()
    env["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env.update(extra)
    return env


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, for a row's notes: how busy the machine was."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def runtime_venv() -> str:
    """The interpreter of a clean virtualenv holding only the runtime dependencies (pyproject's
    `dependencies`, nothing else: no test or bench tools, no editable install's .pth file), to
    time what users install beside this development environment. BENCH_CLEAN_PYTHON names one
    made before; else one is made (pip, from the package index) under ~/.cache, once per
    Python version and dependency list, and reused. Our own code comes from PYTHONPATH, as in
    the development environment (child_env), so both time the same checkout."""
    given = os.environ.get("BENCH_CLEAN_PYTHON")
    if given:
        return given
    import hashlib
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    tag = hashlib.sha256("\n".join([sys.version, *deps]).encode()).hexdigest()[:12]
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = home / "rolesanywhere-hsm" / f"bench-venv-{tag}"
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"[bench] making a clean virtualenv with the runtime dependencies in {venv} ...",
              file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *deps], check=True,
                       stdout=subprocess.DEVNULL)
    return str(python)


def timed_run(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one process run; a failure stops the bench with its
    stderr. CPU time (user + system, from the kernel's accounting of the waited child) hardly
    depends on what else the machine runs, so its ratios hold on a busy machine too."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:5])}... exited {done.returncode}: {done.stderr.decode()[-600:]}")
    return elapsed, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def alternate(variants: dict[str, Callable[[], tuple[float, float]]], runs: int,
              warmup: int = 2) -> dict[str, tuple[list[float], list[float]]]:
    """Run every variant once per round, in turn (ours beside its floor), `warmup` rounds
    discarded; returns (wall ms, CPU ms) samples per variant."""
    samples: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in variants}
    for round_ in range(warmup + runs):
        for name, run in variants.items():
            wall, cpu = run()
            if round_ >= warmup:
                samples[name][0].append(wall * 1000)
                samples[name][1].append(cpu * 1000)
    return samples


# -- test material -----------------------------------------------------------------------------


@dataclass
class Material:
    """A CA, a P-256 file key and certificate, and (when SoftHSM2 is installed) a token holding
    a P-256 key `ec` and an RSA-2048 key `rsa`, each with its certificate."""

    directory: Path
    ca: Any
    ca_file: Path
    cert_file: Path
    key_file: Path
    rsa_cert_file: Path
    rsa_key_file: Path
    token: Any | None

    @classmethod
    def create(cls, directory: Path, *, softhsm: bool = True) -> Material:
        from rolesanywhere_hsm._dev.devpki import CertificateAuthority, new_private_key, write_pem

        ca = CertificateAuthority.create()
        key = new_private_key("p256")
        rsa_key = new_private_key("rsa2048")
        token = None
        if softhsm:
            from rolesanywhere_hsm._dev.softhsm import SoftHsmToken, find_softhsm_module

            if find_softhsm_module() is not None:
                token = SoftHsmToken.create(directory / "hsm", label="bench", pin=PIN, so_pin=SO_PIN)
                token.add_key("p256", "ec", b"\x01", ca)
                token.add_key("rsa2048", "rsa", b"\x02", ca)
            else:
                print("SoftHSM2 is not installed: token rows skipped", file=sys.stderr)
        return cls(
            directory, ca, write_pem(directory / "ca.pem", ca.certificate),
            write_pem(directory / "leaf.crt", ca.issue_leaf(key.public_key(), "bench")),
            write_pem(directory / "leaf.key", key, mode=0o600),
            write_pem(directory / "rsa.crt", ca.issue_leaf(rsa_key.public_key(), "bench-rsa")),
            write_pem(directory / "rsa.key", rsa_key, mode=0o600),
            token,
        )

    def token_env(self) -> dict[str, str]:
        assert self.token is not None
        return {**self.token.env, "RAH_PKCS11_PIN": PIN}

    def server_tls(self) -> tuple[Path, Path]:
        """A server certificate for 127.0.0.1 issued by the CA (for HTTPS emulators)."""
        from rolesanywhere_hsm._dev.devpki import new_private_key, write_pem

        key = new_private_key("p256")
        return (write_pem(self.directory / "server.pem", self.ca.issue_server(key.public_key())),
                write_pem(self.directory / "server.key", key, mode=0o600))


@dataclass
class EmulatorProcess:
    url: str
    trust_anchor_arn: str
    profile_arn: str
    role_arn: str
    pid: int

    @property
    def args(self) -> list[str]:
        """credential-process options that point at this emulator."""
        return ["--endpoint", self.url, "--trust-anchor-arn", self.trust_anchor_arn,
                "--profile-arn", self.profile_arn, "--role-arn", self.role_arn]


@contextmanager
def emulator(material: Material, *, tls: bool = False) -> Iterator[EmulatorProcess]:
    """The bundled emulator in its own process (so that it does not share our GIL)."""
    args = [sys.executable, "-m", "rolesanywhere_hsm", "emulator", "--ca", str(material.ca_file),
            "--max-records", "10"]
    if tls:
        cert, key = material.server_tls()
        args += ["--tls-cert", str(cert), "--tls-key", str(key)]
    process = subprocess.Popen(args, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        seen = []
        for line in process.stdout:
            seen.append(line)
            if line.strip().startswith("try:"):
                break
        else:
            raise SystemExit("the emulator did not start:\n" + "".join(seen))
        found = dict(re.findall(r"--([\w-]+) (\S+)", line))
        # Keep reading what it prints (request logs), so that a full pipe never blocks it.
        threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()  # type: ignore[union-attr]
        yield EmulatorProcess(found["endpoint"], found["trust-anchor-arn"], found["profile-arn"],
                              found["role-arn"], process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
