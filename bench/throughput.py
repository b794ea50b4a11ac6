"""Requests per second: the emulator verifying CreateSession requests (RSA and EC), and
CreateSession in one long-running process through the session layer (signer open, client
reused), as `serve` and the boto3 provider run it.

The emulator runs in its own process; its load is requests signed beforehand (the floor's
`signed_request`, so signing costs the load generator nothing during the measurement), sent
over keep-alive connections from a few threads. The emulator's CPU time per request (from
/proc) is reported too: it does not depend on what else the machine is doing.
"""

from __future__ import annotations

import http.client
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.common import Material, Row, emulator
from bench.floor import _file_signer, signed_request
from bench.serve import cpu_seconds


def _emulator_rate(material: Material, cert: Path, key: Path, count: int, clients: int) -> tuple[float, float, int]:
    with emulator(material) as emu:
        der, serial, algorithm, sign = _file_signer(str(cert), str(key))
        requests = [signed_request(emu.url, emu.trust_anchor_arn, emu.profile_arn, emu.role_arn,
                                   der, serial, algorithm, sign) for _ in range(count)]
        host = emu.url.removeprefix("http://")
        errors: list[str] = []

        def client(part: list[tuple[str, bytes, dict[str, str]]]) -> None:
            connection = http.client.HTTPConnection(host, timeout=30)
            for path, body, headers in part:
                connection.request("POST", path, body, headers)
                answer = connection.getresponse()
                data = answer.read()
                if answer.status != 201 and answer.status != 200:
                    errors.append(f"{answer.status} {data[:200]!r}")
            connection.close()

        client(requests[:5])  # warm-up
        work = requests[5:]
        threads = [threading.Thread(target=client, args=(work[i::clients],)) for i in range(clients)]
        cpu = cpu_seconds(emu.pid)
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        cpu_per_request = (cpu_seconds(emu.pid) - cpu) / len(work)
        if errors:
            raise SystemExit(f"emulator refused {len(errors)} requests, e.g. {errors[0]}")
        return len(work) / elapsed, cpu_per_request * 1e6, len(work)


def emulator_rows(requests: int) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="rah-bench-") as tmp:
        material = Material.create(Path(tmp), softhsm=False)
        for name, cert, key in (("EC P-256", material.cert_file, material.key_file),
                                ("RSA-2048", material.rsa_cert_file, material.rsa_key_file)):
            rate, cpu_us, n = _emulator_rate(material, cert, key, requests, clients=4)
            rows.append(Row("emulator", f"verified CreateSession, {name}", rate, unit="req/s",
                            extra={"server_cpu_us_per_request": round(cpu_us, 1), "requests": n, "clients": 4}))
    return rows


def session_rows(requests: int) -> list[Row]:
    """CreateSession per second through CredentialSession.fetch(), one signer, one client."""
    from rolesanywhere_hsm.session import CredentialSession, CredentialSpec

    rows = []
    with tempfile.TemporaryDirectory(prefix="rah-bench-") as tmp:
        material = Material.create(Path(tmp))
        with emulator(material) as emu:
            common = dict(trust_anchor_arn=emu.trust_anchor_arn, profile_arn=emu.profile_arn,
                          role_arn=emu.role_arn, endpoint=emu.url)
            specs = [("file P-256", CredentialSpec(certificate=str(material.cert_file),
                                                   private_key=str(material.key_file), **common))]
            if material.token is not None:
                for label, name in (("ec", "SoftHSM P-256"), ("rsa", "SoftHSM RSA-2048")):
                    specs.append((name, CredentialSpec(certificate=material.token.uri_for(label, type="cert", module=True),
                                                       **common)))
            import os

            saved = {k: os.environ.get(k) for k in ("RAH_PKCS11_PIN", "SOFTHSM2_CONF")}
            if material.token is not None:
                os.environ.update(material.token_env())
            try:
                for name, spec in specs:
                    session = CredentialSession(spec).open()
                    try:
                        for _ in range(5):
                            session.fetch()  # warm-up
                        samples = []
                        start = time.perf_counter()
                        for _ in range(requests):
                            t = time.perf_counter()
                            session.fetch()
                            samples.append((time.perf_counter() - t) * 1000)
                        elapsed = time.perf_counter() - start
                    finally:
                        session.close()
                    rows.append(Row("session layer", f"CreateSession in-process, {name}", requests / elapsed,
                                    unit="req/s", extra={"median_ms": round(statistics.median(samples), 2),
                                                         "requests": requests, "logins": session.open_count}))
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
    return rows
