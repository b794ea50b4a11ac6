"""How long `credential-process` takes, end to end, against floors measured in the same run.

Each variant is a fresh process, as the AWS SDK runs us. Floors: a bare interpreter, and one
that only imports httpx (the one heavy import a credential fetch cannot avoid). Targets are
the CLI's own `--help` (start-up cost of our code) and a full credential fetch from the bundled
emulator with a file key and, when SoftHSM2 is installed, with a key on a SoftHSM token.
Prints medians and ratios to the bare interpreter; the machine is noisy, so compare within one
run only.

    python bench/startup.py [--runs 15]
    BENCH_PYTHON=/path/to/venv/bin/python python bench/startup.py   # time another environment
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _time(args: list[str], env: dict[str, str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run(args, env=env, capture_output=True, stdin=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(args[:4])}... failed: {result.stderr.decode()[-400:]}")
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs

    from rolesanywhere_hsm.devpki import CertificateAuthority, new_private_key, write_pem
    from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAH_"))}
    py = os.environ.get("BENCH_PYTHON", sys.executable)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        ca = CertificateAuthority.create()
        key = new_private_key("p256")
        cert = write_pem(directory / "leaf.crt", ca.issue_leaf(key.public_key(), "bench"))
        keyfile = write_pem(directory / "leaf.key", key, mode=0o600)
        variants: list[tuple[str, list[str], dict[str, str]]] = [
            ("python -c pass (floor)", [py, "-c", "pass"], env),
            ("python -c 'import httpx' (floor)", [py, "-c", "import httpx"], env),
            ("rolesanywhere-hsm --help", [py, "-m", "rolesanywhere_hsm", "--help"], env),
        ]
        with Emulator(EmulatorConfig.for_certificates([ca.certificate])) as emulator:
            common = [
                "--trust-anchor-arn", emulator.trust_anchor_arn, "--profile-arn", emulator.profile_arn,
                "--role-arn", emulator.role_arn, "--endpoint", emulator.url,
            ]
            variants.append((
                "credential-process, file key (P-256)",
                [py, "-m", "rolesanywhere_hsm", "credential-process", "--certificate", str(cert),
                 "--private-key", str(keyfile), *common],
                env,
            ))
            variants.extend(_softhsm_variants(directory, ca, py, common, env))
            results = [(name, _time(args, e, runs)) for name, args, e in variants]
    floor = results[0][1]
    print(f"median of {runs} runs each, one process per run")
    print(f"{'variant':48} {'median ms':>10} {'x floor':>8}")
    for name, seconds in results:
        print(f"{name:48} {seconds * 1000:10.1f} {seconds / floor:8.2f}")


def _softhsm_variants(directory: Path, ca: object, py: str, common: list[str], env: dict[str, str]) -> list[tuple[str, list[str], dict[str, str]]]:
    try:
        from rolesanywhere_hsm.softhsm import SoftHsmToken, find_softhsm_module
    except ImportError:
        return []
    if find_softhsm_module() is None:
        print("SoftHSM2 not installed: token variant skipped", file=sys.stderr)
        return []
    pin = "bench-pin-1234"
    token = SoftHsmToken.create(directory / "hsm", label="bench", pin=pin, so_pin="bench-so-5678")
    token.add_key("p256", "workload", b"\x01", ca)
    token_env = {**env, **token.env, "RAH_PKCS11_PIN": pin}
    uri = token.uri_for("workload", type="cert", module=True)
    return [(
        "credential-process, SoftHSM key (P-256)",
        [py, "-m", "rolesanywhere_hsm", "credential-process", "--certificate", uri, *common],
        token_env,
    )]


if __name__ == "__main__":
    main()
