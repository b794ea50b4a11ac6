"""Operating on a fleet (issue 19): /livez, /readyz and /metrics of `serve` and
`update --metrics-port`, rotation in running processes, and the audit log of parallel
`credential-process` runs. Real processes, a SoftHSM token, the emulator on loopback; the
metrics are read with prometheus-client's own parser."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, write_pem
from rolesanywhere_hsm.emulator import Emulator
from rolesanywhere_hsm._dev.softhsm import SoftHsmToken
from tests.cli.test_serve import Serve, server, start_serve  # noqa: F401  (fixtures)
from tests.cli.test_update import credential_args, environment, read_profiles, start, stop, wait_for
from tests.clirunner import run_cli
from tests.fixtures.softhsm import SOFTHSM_PIN
from tests.test_rotation import write_to_token

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

ROOT = Path(__file__).parents[2]
NOW = dt.datetime.now(dt.timezone.utc)


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, parsed by prometheus-client."""
    answer = httpx.get(f"{base}/metrics", timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def renewed_for(token: SoftHsmToken, ca: CertificateAuthority, serial: int) -> Any:
    key = token.keys["ec-p256"]
    return ca.issue_leaf(key.certificate.public_key(), "workload-1", serial=serial,
                         not_after=(NOW + dt.timedelta(days=500)).replace(microsecond=0))


# -- serve --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_serve_health_metrics_rotation_and_throttling(
    server: Emulator, start_serve: Callable[..., Serve], softhsm_token: SoftHsmToken,  # noqa: F811
    intermediate_ca: CertificateAuthority, tmp_path: Path,
) -> None:
    server.config.credential_lifetime = 8
    running = start_serve(server, "--timeout", "4")
    base = running.url
    assert httpx.get(f"{base}/livez").status_code == 200
    assert httpx.get(f"{base}/readyz").status_code == 200
    first_serial = server.issued[-1].leaf_serial
    assert first_serial == softhsm_token.keys["ec-p256"].certificate.serial_number

    # Rotation on the token: the next refresh signs with the renewed certificate, no new login.
    renewed = renewed_for(softhsm_token, intermediate_ca, 0x5E4E01)
    write_to_token(softhsm_token, renewed, "ec-p256-renewed", softhsm_token.keys["ec-p256"].key_id, tmp_path)
    wait_for(lambda: server.issued[-1].leaf_serial == 0x5E4E01, 30, "a refresh with the renewed certificate")
    assert "certificate rotated: serial" in running.stderr and "serial 5e4e01" in running.stderr

    # The gauges equal what is served and the certificate's notAfter.
    def consistent() -> bool:
        before = scrape(base)
        health = httpx.get(f"{base}/healthz").json()
        after = scrape(base)
        if before != after and value(before, "rah_credentials_expiry_timestamp_seconds") != value(
                after, "rah_credentials_expiry_timestamp_seconds"):
            return False
        served = dt.datetime.strptime(health["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
        return int(value(after, "rah_credentials_expiry_timestamp_seconds")) == int(served.timestamp())
    wait_for(consistent, 20, "a scrape between two refreshes")
    samples = scrape(base)
    assert value(samples, "rah_certificate_not_after_timestamp_seconds") == renewed.not_valid_after_utc.timestamp()
    assert value(samples, "rah_token_logins_total") == 1
    assert value(samples, "rah_certificate_rotations_total", outcome="applied") == 1
    assert value(samples, "rah_refreshes_total", outcome="success", code="") == len(server.issued)
    assert value(samples, "rah_create_session_duration_seconds_count") == len(server.issued)
    assert value(samples, "rah_http_requests_total", endpoint="healthz", status="200") >= 1
    assert value(samples, "rah_http_requests_total", endpoint="metrics", status="200") >= 2  # this one counts after

    # Throttled: serve backs off and counts it; the failure counter moves; after expiry
    # /readyz (and /healthz) answer 503 while /livez stays 200.
    server.refuse_for(60, 429)
    wait_for(lambda: value(scrape(base), "rah_throttled_total") >= 1, 30, "a throttled refresh")
    samples = scrape(base)
    assert value(samples, "rah_refreshes_total", outcome="failure", code="RAH-SVC-005") >= 1
    wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 503, 30, "/readyz 503 after expiry")
    assert httpx.get(f"{base}/healthz").status_code == 503
    assert httpx.get(f"{base}/livez").status_code == 200
    assert "throttl" in running.stderr.lower()
    assert running.stop() == 0


@pytest.mark.slow  # waits on a clock: waits 1.6 s for credentials to expire
def test_readyz_is_503_before_the_first_credentials_and_after_expiry() -> None:
    """The application alone, on a real loopback server: no credentials yet, then valid ones,
    then expired ones."""
    from rolesanywhere_hsm.credentials import Credentials
    from rolesanywhere_hsm.errors import CredentialsUnavailableError
    from rolesanywhere_hsm.httpserver import HttpServer
    from rolesanywhere_hsm.metrics import Metrics
    from rolesanywhere_hsm.servers.app import ServeApp

    held: list[Credentials] = []

    class Source:
        def current(self) -> Credentials:
            if not held or held[0].expiration <= dt.datetime.now(dt.timezone.utc):
                raise CredentialsUnavailableError("none")
            return held[0]

    metrics = Metrics("serve")
    app = ServeApp(Source(), role_name="r", container_token="t" * 32, metrics=metrics)
    http = HttpServer(app, port=0).start_in_thread()
    try:
        base = f"http://127.0.0.1:{http.port}"
        assert [httpx.get(f"{base}{p}").status_code for p in ("/livez", "/readyz", "/healthz")] == [200, 503, 503]
        held.append(Credentials("AKIA1", "s", "t", dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1.5)))
        assert [httpx.get(f"{base}{p}").status_code for p in ("/livez", "/readyz", "/healthz")] == [200, 200, 200]
        time.sleep(1.6)
        assert [httpx.get(f"{base}{p}").status_code for p in ("/livez", "/readyz", "/healthz")] == [200, 503, 503]
        assert httpx.post(f"{base}/readyz").status_code == 405
        assert metrics.requests["readyz"] == {503: 2, 200: 1, 405: 1}
        assert metrics.requests["livez"] == {200: 3}
    finally:
        http.stop()


# -- update --metrics-port -----------------------------------------------------------------------

@pytest.mark.slow
def test_update_rotation_with_one_login_and_its_metrics_port(
    server: Emulator, softhsm_token: SoftHsmToken, intermediate_ca: CertificateAuthority,  # noqa: F811
    tmp_path: Path,
) -> None:
    server.config.credential_lifetime = 8
    chain = write_pem(tmp_path / "intermediates.pem", intermediate_ca.certificate)
    path = tmp_path / "credentials"
    audit = tmp_path / "audit.log"
    env = environment(path, **softhsm_token.env, RAH_PKCS11_PIN=SOFTHSM_PIN, RAH_AUDIT_LOG=str(audit))
    args = credential_args(server, softhsm_token.uri_for("ec-p256", type="cert"), "--intermediates", str(chain),
                           "--metrics-port", "0")
    proc = start(args, env)  # the loop, a real process (tests.cli.test_update.start)
    try:
        assert proc.stderr is not None
        line = ""
        deadline = time.monotonic() + 60
        while "health and metrics on" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "update ended early"
        base = re.search(r"(http://127\.0\.0\.1:\d+)/", line).group(1)  # type: ignore[union-attr]
        wait_for(lambda: path.exists() and httpx.get(f"{base}/readyz").status_code == 200, 30, "ready")
        assert httpx.get(f"{base}/livez").status_code == 200
        renewed = renewed_for(softhsm_token, intermediate_ca, 0x5E4E02)
        write_to_token(softhsm_token, renewed, "ec-p256-renewed", softhsm_token.keys["ec-p256"].key_id, tmp_path)
        wait_for(lambda: server.issued[-1].leaf_serial == 0x5E4E02, 30, "a refresh with the renewed certificate")
        wait_for(lambda: read_profiles(path)["default"]["aws_access_key_id"] == server.issued[-1].access_key_id,
                 15, "the renewed set in the file")
        samples = scrape(base)
        assert value(samples, "rah_token_logins_total") == 1
        assert value(samples, "rah_certificate_not_after_timestamp_seconds") == renewed.not_valid_after_utc.timestamp()
        assert value(samples, "rah_certificate_rotations_total", outcome="applied") == 1
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0, err
    assert "certificate rotated: serial" in err and "serial 5e4e02" in err
    lines = [json.loads(text) for text in audit.read_text().splitlines()]
    assert len(lines) == len(server.issued) and {line["outcome"] for line in lines} == {"success"}
    assert lines[-1]["certificateSerial"] == "5e4e02" and lines[0]["tokenSerial"] == softhsm_token.serial


def test_metrics_port_needs_the_loop(server: Emulator, leaf_files: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    files = leaf_files["p256"]
    args = credential_args(server, str(files.certificate), "--private-key", str(files.key), "--once",
                           "--metrics-port", "0")
    done = run_cli(*args, env=environment(tmp_path / "c"), cwd=ROOT)
    assert done.returncode == 2 and "--metrics-port needs update to keep running" in done.stderr


# -- the audit log ---------------------------------------------------------------------------------

def test_twenty_parallel_runs_append_twenty_json_lines_without_a_secret(
    server: Emulator, leaf_files: dict[str, Any], tmp_path: Path,  # noqa: F811
) -> None:
    files = leaf_files["p384"]  # issued by the intermediate: a chain is sent
    audit = tmp_path / "logs" / "audit.jsonl"
    audit.parent.mkdir()
    base = [sys.executable, "-m", "rolesanywhere_hsm", "credential-process", "--certificate", str(files.certificate),
            "--private-key", str(files.key), "--intermediates", str(files.chain),
            "--trust-anchor-arn", server.trust_anchor_arn, "--role-arn", server.role_arn,
            "--endpoint", server.url, "--audit-log", str(audit)]
    missing_profile = server.profile_arn.rsplit("/", 1)[0] + "/00000000-0000-4000-8000-000000000000"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAH_"))}
    env["PYTHONPATH"] = str(ROOT)

    def one(index: int) -> subprocess.CompletedProcess[str]:
        profile = server.profile_arn if index % 2 == 0 else missing_profile
        return subprocess.run([*base, "--profile-arn", profile], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)

    with ThreadPoolExecutor(20) as pool:
        runs = list(pool.map(one, range(20)))
    assert sorted(r.returncode for r in runs) == [0] * 10 + [6] * 10
    assert stat.S_IMODE(audit.stat().st_mode) == 0o600
    text = audit.read_text()
    lines = [json.loads(line) for line in text.splitlines()]  # each a whole JSON object
    assert len(lines) == 20 and text.endswith("\n")
    ok = [line for line in lines if line["outcome"] == "success"]
    failed = [line for line in lines if line["outcome"] == "failure"]
    assert len(ok) == len(failed) == 10
    assert {line["accessKeyId"] for line in ok} == {i.access_key_id for i in server.issued}
    assert {line["errorCode"] for line in failed} == {"RAH-SVC-004"}
    assert all("accessKeyId" not in line and "expiration" not in line for line in failed)
    serial = f"{files.cert.serial_number:x}"
    for line in lines:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
        assert line["certificateSerial"] == serial and line["certificateSubject"] and line["certificateIssuer"]
        assert line["key"] == str(files.key) and line["roleArn"] == server.role_arn
        assert line["trustAnchorArn"] == server.trust_anchor_arn and line["durationSeconds"] == 3600
    for issued in server.issued:  # never a secret
        assert issued.secret_access_key not in text and issued.session_token not in text
    for run in runs:
        if run.returncode == 0:
            assert json.loads(run.stdout)["SecretAccessKey"] not in text


def test_audit_to_stderr_and_a_symlink_refused(server: Emulator, leaf_files: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    files = leaf_files["p256"]
    args = [sys.executable, "-m", "rolesanywhere_hsm", "credential-process", "--certificate", str(files.certificate),
            "--private-key", str(files.key), "--trust-anchor-arn", server.trust_anchor_arn,
            "--profile-arn", server.profile_arn, "--role-arn", server.role_arn, "--endpoint", server.url]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAH_"))}
    env.update(PYTHONPATH=str(ROOT), RAH_AUDIT_LOG="-")
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    line = json.loads(done.stderr.strip().splitlines()[-1])
    assert line["outcome"] == "success" and line["accessKeyId"] == json.loads(done.stdout)["AccessKeyId"]
    target = tmp_path / "elsewhere"
    link = tmp_path / "audit.log"
    link.symlink_to(target)
    env["RAH_AUDIT_LOG"] = str(link)
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "symbolic link" in done.stderr and done.stdout == ""
    assert not target.exists()


def test_audit_record_and_metrics_on_plain_data() -> None:
    """The audit line's fields and the rendered metrics from one success and one failure."""
    from rolesanywhere_hsm.attempts import Attempt, CertificateSummary
    from rolesanywhere_hsm.audit import audit_record
    from rolesanywhere_hsm.metrics import Metrics

    cert = CertificateSummary("1f", "CN=w", "CN=ca", dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc))
    common = dict(certificate=cert, key="pkcs11:token=t;object=k;pin-value=1234", token_serial="abc",
                  trust_anchor_arn="ta", profile_arn="pa", role_arn="ra", role_session_name=None,
                  duration_seconds=900)
    good = Attempt(time=dt.datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=dt.timezone.utc), seconds=0.2,
                   outcome="success", error_code=None, access_key_id="AKIAX",
                   expiration=dt.datetime(2026, 1, 1, 1, tzinfo=dt.timezone.utc), **common)  # type: ignore[arg-type]
    bad = Attempt(time=good.time, seconds=3.0, outcome="failure", error_code="RAH-SVC-005", throttled=True,
                  **common)  # type: ignore[arg-type]
    line = audit_record(good)
    assert line["time"] == "2026-01-01T00:00:00.123Z" and line["expiration"] == "2026-01-01T01:00:00Z"
    assert line["accessKeyId"] == "AKIAX" and line["certificateSerial"] == "1f" and line["tokenSerial"] == "abc"
    assert "1234" not in json.dumps(line) and line["key"].startswith("pkcs11:token=t;object=k")
    assert "accessKeyId" not in audit_record(bad) and audit_record(bad)["errorCode"] == "RAH-SVC-005"
    metrics = Metrics("serve", logins=lambda: 1)
    metrics(good)
    metrics(bad)
    body, _ = metrics.render()
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert value(samples, "rah_refreshes_total", outcome="failure", code="RAH-SVC-005") == 1
    assert value(samples, "rah_refreshes_total", outcome="success", code="") == 1
    assert value(samples, "rah_throttled_total") == 1
    assert value(samples, "rah_credentials_expiry_timestamp_seconds") == good.expiration.timestamp()  # type: ignore[union-attr]
    assert value(samples, "rah_certificate_not_after_timestamp_seconds") == cert.not_after.timestamp()
    assert value(samples, "rah_create_session_duration_seconds_bucket", le="0.25") == 1
    assert value(samples, "rah_create_session_duration_seconds_bucket", le="5.0") == 2
