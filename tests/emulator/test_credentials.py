"""What the emulator hands out (docs/protocol.md sections 4 item 7 and 5): the 201 body's shape,
the effective duration, the role session name, the source identity and the session tags."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import pytest

from rolesanywhere_hsm._dev.devpki import CertificateAuthority
from rolesanywhere_hsm.emulator import Emulator, Role
from tests.emulator.conftest import create_session


def test_201_body_has_the_services_shape(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    response = create_session(emulator, p256_key, leaf)

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"credentialSet", "subjectArn"}
    (entry,) = body["credentialSet"]
    assert set(entry) == {"assumedRoleUser", "credentials", "packedPolicySize", "roleArn", "sourceIdentity"}
    creds = entry["credentials"]
    assert re.fullmatch(r"ASIA[A-Z2-7]{16}", creds["accessKeyId"])
    assert len(creds["secretAccessKey"]) == 40
    assert len(creds["sessionToken"]) > 100
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", creds["expiration"])
    assert entry["roleArn"] == emulator.role_arn
    assert isinstance(entry["packedPolicySize"], int)
    assert re.fullmatch(r"arn:aws:rolesanywhere:us-east-1:111122223333:subject/[0-9a-f-]{36}", body["subjectArn"])
    issued = emulator.last_issued
    assert creds["accessKeyId"] == issued.access_key_id
    assert creds["secretAccessKey"] == issued.secret_access_key
    assert creds["sessionToken"] == issued.session_token


def test_each_session_gets_fresh_keys(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    first = create_session(emulator, p256_key, leaf).json()["credentialSet"][0]["credentials"]
    second = create_session(emulator, p256_key, leaf).json()["credentialSet"][0]["credentials"]

    assert first["accessKeyId"] != second["accessKeyId"]
    assert first["secretAccessKey"] != second["secretAccessKey"]


def test_role_session_name_defaults_to_the_serial_in_lowercase_hex(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    body = create_session(emulator, p256_key, leaf).json()

    name = format(leaf.serial_number, "x")
    assert emulator.last_issued.role_session_name == name
    user = body["credentialSet"][0]["assumedRoleUser"]
    assert user["arn"] == f"arn:aws:sts::111122223333:assumed-role/rolesanywhere-hsm-emulator/{name}"
    assert user["assumedRoleId"].endswith(":" + name)
    assert user["assumedRoleId"].startswith("AROA")


def test_role_session_name_from_the_request_when_the_profile_accepts_it(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    emulator.config.profiles[emulator.profile_arn].accept_role_session_name = True

    response = create_session(emulator, p256_key, leaf, body_fields={"roleSessionName": "build-42@ci"})

    assert response.status_code == 201
    assert emulator.last_issued.role_session_name == "build-42@ci"


def test_source_identity_is_the_cn(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    body = create_session(emulator, p256_key, leaf).json()

    assert body["credentialSet"][0]["sourceIdentity"] == "CN=workload-1"
    assert emulator.last_issued.source_identity == "CN=workload-1"


@pytest.mark.parametrize(("length", "expected"), [(61, True), (62, False)])
def test_source_identity_only_for_a_cn_of_at_most_61_characters(
    length: int, expected: bool, emulator: Emulator, p256_key: Any, root_ca: CertificateAuthority,
) -> None:
    cn = "w" * length
    cert = root_ca.issue_leaf(p256_key.public_key(), cn)

    body = create_session(emulator, p256_key, cert).json()

    entry = body["credentialSet"][0]
    assert ("sourceIdentity" in entry) is expected
    assert emulator.last_issued.source_identity == (f"CN={cn}" if expected else None)


def test_session_tags_come_from_the_certificate(emulator: Emulator, p256_key: Any, root_ca: CertificateAuthority) -> None:
    cert = root_ca.issue_leaf(p256_key.public_key(), "tagged", organization="Example Org",
                              dns_names=["a.example", "b.example"])

    assert create_session(emulator, p256_key, cert).status_code == 201

    assert emulator.last_issued.session_tags == {
        "x509Subject/CN": "tagged",
        "x509Subject/O": "Example Org",
        "x509Issuer/CN": "rolesanywhere-hsm Test Root CA",
        "x509Issuer/O": "rolesanywhere-hsm tests",
        "x509SAN/DNS": "a.example",
    }


@pytest.mark.parametrize(
    ("requested", "profile", "role_max", "expected"),
    [
        (None, 3600, 3600, 3600),  # the default request is 3600
        (900, 3600, 3600, 900),  # the request is the smallest
        (7200, 3600, 43200, 3600),  # the profile is the smallest
        (43200, 43200, 3600, 3600),  # the role's MaxSessionDuration is the smallest
        (43200, 43200, 43200, 43200),
    ],
)
def test_duration_is_the_minimum_of_request_profile_and_role(
    requested: int | None, profile: int, role_max: int, expected: int,
    emulator: Emulator, p256_key: Any, leaf: Any,
) -> None:
    emulator.config.profiles[emulator.profile_arn].duration_seconds = profile
    emulator.config.add_role(Role(emulator.role_arn, max_session_duration=role_max))
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(days=1)
    emulator.freeze_clock(now)
    fields = {} if requested is None else {"durationSeconds": requested}

    response = create_session(emulator, p256_key, leaf, body_fields=fields, when=now)

    assert response.status_code == 201, response.headers.get("x-rah-emulator-detail")
    assert emulator.last_issued.duration_seconds == expected
    expiration = (now + dt.timedelta(seconds=expected)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert response.json()["credentialSet"][0]["credentials"]["expiration"] == expiration


def test_role_max_default_is_configurable(
    emulator_factory: Callable[..., Emulator], p256_key: Any, leaf: Any,
) -> None:
    emulator = emulator_factory(role_max_session_duration=1800)

    create_session(emulator, p256_key, leaf)

    assert emulator.last_issued.duration_seconds == 1800


def test_credentials_are_not_in_reprs(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    create_session(emulator, p256_key, leaf)
    issued = emulator.last_issued

    text = repr(emulator.requests)
    assert issued.secret_access_key not in text
    assert issued.session_token not in text
