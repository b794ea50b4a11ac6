"""`credential-process --cache` end to end: SoftHSM keys, the emulator on loopback, real
processes. One CreateSession for many parallel cold runs; a hit touches no token and imports
nothing heavy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, write_pem
from rolesanywhere_hsm.emulator import Emulator
from rolesanywhere_hsm._dev.softhsm import SoftHsmToken
from tests.cli.test_credential_process_pkcs11 import server, spy  # noqa: F401 (fixtures)
from tests.signers.test_pkcs11_spy import counts, parse_spy_log

pytestmark = pytest.mark.softhsm
ROOT = Path(__file__).parents[2]
# (certifi is not listed: some Python installations import it at start, from a .pth file)
HEAVY = {"typer", "click", "pydantic", "rich", "httpx", "httpcore", "h11", "trio", "anyio", "pkcs11",
         "cryptography", "asn1crypto"}

# Runs the real front door and reports, on stderr, which top-level packages it had imported.
_PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('IMPORTED', ' '.join(sorted({m.split('.')[0] for m in sys.modules})),"
    " file=sys.stderr))\n"
    "sys.argv = ['rolesanywhere-hsm', *sys.argv[1:]]\n"
    "from rolesanywhere_hsm.cli import main\n"
    "main()\n"
)


@pytest.fixture
def chain(intermediate_ca: CertificateAuthority, tmp_path: Path) -> Path:
    return write_pem(tmp_path / "intermediates.pem", intermediate_ca.certificate)


def cli_args(server: Emulator, certificate: str, chain: Path, *extra: str) -> list[str]:  # noqa: F811
    return ["credential-process", "--certificate", certificate, "--intermediates", str(chain),
            "--trust-anchor-arn", server.trust_anchor_arn, "--profile-arn", server.profile_arn,
            "--role-arn", server.role_arn, "--endpoint", server.url, *extra]


def run(args: list[str], env: dict[str, str], probe: bool = False) -> subprocess.CompletedProcess[str]:
    head = [sys.executable, "-c", _PROBE] if probe else [sys.executable, "-m", "rolesanywhere_hsm"]
    return subprocess.run([*head, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120, stdin=subprocess.DEVNULL, start_new_session=True)


def imported(result: subprocess.CompletedProcess[str]) -> set[str]:
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("IMPORTED ")]
    return set(line.split()[1:])


def test_parallel_cold_runs_make_one_create_session_and_print_the_same_credentials(
    server: Emulator, softhsm_token: SoftHsmToken, softhsm_env: dict[str, str], chain: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    env = dict(softhsm_env, RAH_CACHE_DIR=str(tmp_path / "cache"))
    args = [sys.executable, "-m", "rolesanywhere_hsm",
            *cli_args(server, softhsm_token.uri_for("ec-p256", type="cert"), chain, "--cache")]
    runs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             cwd=ROOT, stdin=subprocess.DEVNULL, start_new_session=True)
            for _ in range(20)]
    outputs = [run.communicate(timeout=180) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err for _, err in outputs if err][:2]
    assert len({out for out, _ in outputs}) == 1
    assert len(server.issued) == 1
    assert json.loads(outputs[0][0])["AccessKeyId"] == server.issued[0].access_key_id


def test_a_hit_loads_no_pkcs11_module_asks_no_pin_and_imports_nothing_heavy(
    server: Emulator, softhsm_token: SoftHsmToken, spy: tuple[dict[str, str], Path], chain: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    env, log = spy
    env = dict(env, RAH_CACHE_DIR=str(tmp_path / "cache"))
    args = cli_args(server, softhsm_token.uri_for("rsa-2048", type="cert"), chain, "--cache")
    first = run(args, env)
    assert first.returncode == 0, first.stderr
    assert counts(parse_spy_log(log))["C_Login"] == 1
    log.unlink()
    no_pin = {k: v for k, v in env.items() if k != "RAH_PKCS11_PIN"}  # a prompt would fail: no tty
    hit = run(args, no_pin, probe=True)
    assert hit.returncode == 0, hit.stderr
    assert hit.stdout == first.stdout
    assert not log.exists(), "the PKCS#11 module was loaded on a cache hit"
    assert not imported(hit) & HEAVY
    assert len(server.issued) == 1


@pytest.mark.parametrize("cache", [[], ["--cache"]])
def test_a_bad_arn_is_reported_before_anything_heavy_is_imported(tmp_path: Path, cache: list[str]) -> None:
    """With --cache too: the hit's key finds no entry for it, and the checks report it."""
    result = run(["credential-process", "--certificate", "pkcs11:token=x;object=y",
                  "--trust-anchor-arn", "arn:aws:rolesanywhere:eu-west-1:111122223333:trust-anchor/x",
                  "--profile-arn", "not-an-arn", "--role-arn", "arn:aws:iam::111122223333:role/R", *cache],
                 dict(os.environ, RAH_CACHE_DIR=str(tmp_path / "cache")), probe=True)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("rolesanywhere-hsm: The trust anchor ARN "
                                    "'arn:aws:rolesanywhere:eu-west-1:111122223333:trust-anchor/x' "
                                    "does not name a trust-anchor resource.")
    assert not imported(result) & HEAVY


def test_without_cache_nothing_is_written(
    server: Emulator, softhsm_token: SoftHsmToken, softhsm_env: dict[str, str], chain: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    env = dict(softhsm_env, RAH_CACHE_DIR=str(tmp_path / "cache"))
    result = run(cli_args(server, softhsm_token.uri_for("ec-p256", type="cert"), chain), env)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "cache").exists()
