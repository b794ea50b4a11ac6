"""The systemd units of deploy/systemd: `systemd-analyze verify` passes on each with no warning
(in a scratch root holding the system's units and the documented install path), and they keep
the promises docs/deploy.md makes (notify, secrets through LoadCredential, hardening)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
EXECUTABLE = "/opt/rolesanywhere-hsm/bin/rolesanywhere-hsm"  # the install path docs/deploy.md gives


def verify(unit_text: str, name: str, root: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` of `unit_text` installed as `name` under the scratch `root`."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (.ci/install-deps installs systemd)")
    if not (root / "usr/lib/systemd/system").exists():
        shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
        program = root / EXECUTABLE.lstrip("/")
        program.parent.mkdir(parents=True)
        program.write_text("#!/bin/sh\n")
        program.chmod(0o755)
        (root / "etc/systemd/system").mkdir(parents=True)
    target = root / "etc/systemd/system" / name
    target.write_text(unit_text)
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}", str(target)],
                          capture_output=True, text=True, timeout=60, cwd=root)


def test_the_units_are_found() -> None:
    assert {u.name for u in UNITS} == {"rolesanywhere-hsm-serve.service", "rolesanywhere-hsm-update.service"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_analyze_verify_passes_without_a_warning(unit: Path, tmp_path: Path) -> None:
    result = verify(unit.read_text(), unit.name, tmp_path)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_verify_does_complain_about_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt directive and a missing program are reported."""
    text = UNITS[0].read_text().replace("NoNewPrivileges=", "NoNewPrivilege=")
    assert "NoNewPrivilege" in verify(text, "broken.service", tmp_path).stderr
    text = UNITS[0].read_text().replace(EXECUTABLE, "/opt/nowhere/rolesanywhere-hsm")
    result = verify(text, "missing.service", tmp_path)
    assert result.returncode != 0 and "/opt/nowhere/rolesanywhere-hsm" in result.stderr


def _service(unit: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit.read_text())
    return parser


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_units_notify_take_the_pin_as_a_credential_and_are_hardened(unit: Path) -> None:
    service = _service(unit)["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert "LoadCredential" in service and "pin:" in unit.read_text()
    assert "pin-source=file:%d/pin" in service["ExecStart"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "DynamicUser": "yes", "DevicePolicy": "closed", "CapabilityBoundingSet": ""}.items():
        assert service[key] == value, key
    assert int(service["LimitNOFILE"]) >= 256
    assert service["RestartPreventExitStatus"].split() == ["2", "3", "5"]
    assert "RAH_PKCS11_PIN" not in unit.read_text()  # a PIN never in the environment
