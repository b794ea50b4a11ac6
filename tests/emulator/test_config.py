"""Loading the emulator's account from TOML or JSON, and the one-line errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, write_pem
from rolesanywhere_hsm.emulator import Emulator, load_config
from rolesanywhere_hsm.errors import UsageError
from tests.emulator.conftest import create_session

ANCHOR = "arn:aws:rolesanywhere:eu-west-1:444455556666:trust-anchor/aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
PROFILE = "arn:aws:rolesanywhere:eu-west-1:444455556666:profile/11111111-2222-3333-4444-555555555555"
ROLE = "arn:aws:iam::444455556666:role/path/Workload"

TOML = f"""
skew_seconds = 120
role_max_session_duration = 7200

[[trust_anchors]]
arn = "{ANCHOR}"
certificates = ["ca.pem"]
crls = ["ca.crl"]

[[profiles]]
arn = "{PROFILE}"
role_arns = ["{ROLE}"]
duration_seconds = 43200
accept_role_session_name = true
session_policy = '{{"Version":"2012-10-17","Statement":[]}}'
managed_policy_arns = ["arn:aws:iam::aws:policy/ReadOnlyAccess"]

[[roles]]
arn = "{ROLE}"
max_session_duration = 10800
"""


@pytest.fixture
def files(tmp_path: Path, root_ca: CertificateAuthority) -> Path:
    write_pem(tmp_path / "ca.pem", root_ca.certificate)
    write_pem(tmp_path / "ca.crl", root_ca.issue_crl([12345]))
    return tmp_path


def test_loads_a_toml_config(files: Path) -> None:
    (files / "emulator.toml").write_text(TOML)

    config = load_config(files / "emulator.toml")

    assert (config.region, config.account, config.skew_seconds) == ("eu-west-1", "444455556666", 120)
    anchor = config.trust_anchors[ANCHOR]
    assert len(anchor.certificates) == 1 and len(anchor.crls) == 1
    profile = config.profiles[PROFILE]
    assert profile.role_arns == [ROLE]
    assert profile.accept_role_session_name and profile.enabled
    assert profile.managed_policy_arns == ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
    assert config.role_max(ROLE) == 10800
    assert config.role_max("arn:aws:iam::444455556666:role/Other") == 7200


def test_loads_the_same_config_from_json(files: Path) -> None:
    import tomllib

    (files / "emulator.json").write_text(json.dumps(tomllib.loads(TOML)))

    config = load_config(files / "emulator.json")

    assert list(config.profiles) == [PROFILE]
    assert config.role_max(ROLE) == 10800


def test_a_loaded_config_serves_credentials(files: Path, p256_key: Any, leaf: Any) -> None:
    (files / "emulator.toml").write_text(TOML)

    with Emulator(load_config(files / "emulator.toml")) as emulator:
        response = create_session(emulator, p256_key, leaf, role_arn=ROLE,
                                  body_fields={"durationSeconds": 43200, "roleSessionName": "named"})

    assert response.status_code == 201, response.headers.get("x-rah-emulator-detail")
    assert emulator.last_issued.duration_seconds == 10800
    assert emulator.last_issued.role_session_name == "named"
    assert "assumed-role/Workload/named" in emulator.last_issued.assumed_role_arn


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("this is = = not toml", "not valid TOML"),
        ("region = 'us-east-1'", "missing key 'trust_anchors'"),
        ("[[trust_anchors]]\narn = 'x'\ncertificates = ['ca.pem']", "'x' is not a trust-anchor ARN"),
        (f"[[trust_anchors]]\narn = '{ANCHOR}'\ncertificates = ['missing.pem']", "Cannot read the CA certificate file"),
        (f"[[trust_anchors]]\narn = '{ANCHOR}'\ncertificates = ['ca.pem']\ncolour = 'blue'", "unknown key(s) colour"),
        (f"[[trust_anchors]]\narn = '{ANCHOR}'\ncertificates = ['ca.pem']\n[[profiles]]\narn = '{PROFILE}'\n"
         f"role_arns = ['{ROLE}']\nduration_seconds = true", "'duration_seconds' has the wrong type"),
        (f"[[trust_anchors]]\narn = '{ANCHOR}'\ncertificates = ['ca.pem']\n[[profiles]]\narn = '{PROFILE}'\n"
         f"role_arns = ['{ROLE}']\nduration_seconds = 60", "not in 900..43200"),
        (f"[[trust_anchors]]\narn = '{ANCHOR}'\ncertificates = ['ca.crl']", "not a PEM or DER certificate"),
        (f"region = 'us-east-1'\n[[trust_anchors]]\narn = '{ANCHOR}'\ncertificates = ['ca.pem']", "not in this emulator's"),
    ],
)
def test_a_bad_file_is_one_clear_usage_error(text: str, message: str, files: Path) -> None:
    path = files / "bad.toml"
    path.write_text(text)

    with pytest.raises(UsageError) as caught:
        load_config(path)

    assert message in caught.value.message
    assert str(path) in caught.value.message
    assert "\n" not in caught.value.message


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="Cannot read the emulator config file"):
        load_config(tmp_path / "nope.toml")
