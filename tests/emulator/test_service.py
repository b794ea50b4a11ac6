"""The emulator as a test double: request records, injected failures, the movable clock, the
lifecycle, other regions and accounts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from rolesanywhere_hsm._dev.devpki import CertificateAuthority
from rolesanywhere_hsm.emulator import DISCONNECT, Emulator, EmulatorConfig, Fault
from rolesanywhere_hsm.errors import UsageError
from tests.emulator.conftest import assert_refused, create_session, sign, send


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(500, "InternalServerException"), (503, "ServiceUnavailableException"), (429, "ThrottlingException")],
)
def test_injected_failures_answer_like_aws(status: int, error_type: str, emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    emulator.inject_failures([status])

    response = create_session(emulator, p256_key, leaf)

    assert response.status_code == status
    assert response.headers["x-amzn-errortype"] == error_type
    assert response.json()["message"]
    assert emulator.last_request.injected


def test_injected_failures_are_used_once_each_in_order(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    emulator.inject_failures([500, 503])
    assert emulator.pending_failures == 2

    statuses = [create_session(emulator, p256_key, leaf).status_code for _ in range(3)]

    assert statuses == [500, 503, 201]
    assert emulator.pending_failures == 0
    assert len(emulator.issued) == 1


def test_injected_disconnect_drops_the_connection(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    emulator.inject_failures([DISCONNECT])

    with pytest.raises(httpx.TransportError):
        create_session(emulator, p256_key, leaf)

    assert emulator.last_request.status == 0
    assert create_session(emulator, p256_key, leaf).status_code == 201


def test_injected_custom_fault(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    emulator.inject_failures([Fault(403, "AccessDeniedException", "Custom refusal")])

    assert_refused(create_session(emulator, p256_key, leaf), 403, "AccessDeniedException", "Custom refusal")


def test_inject_refuses_a_non_error_status(emulator: Emulator) -> None:
    with pytest.raises(ValueError):
        emulator.inject_failures([200])


def test_records_the_request_as_received(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    signed = sign(emulator, p256_key, leaf, arns_in="body", body_fields={"durationSeconds": 1200})

    send(signed)

    record = emulator.last_request
    assert (record.method, record.path, record.status) == ("POST", "/sessions", 201)
    assert record.body == signed.body
    assert record.json()["durationSeconds"] == 1200
    assert record.header("authorization") == signed.headers["Authorization"]
    assert record.credentials == emulator.last_issued
    emulator.clear_records()
    assert emulator.requests == []


def test_frozen_clock_decides_the_skew_and_validity(emulator: Emulator, p256_key: Any, root_ca: CertificateAuthority) -> None:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    cert = root_ca.issue_leaf(p256_key.public_key(), "short-lived", not_before=now - dt.timedelta(hours=1),
                              not_after=now + dt.timedelta(days=2))
    later = now + dt.timedelta(days=3)
    emulator.freeze_clock(later)

    response = create_session(emulator, p256_key, cert, when=later)

    assert_refused(response, 403, "AccessDeniedException", "Untrusted signing certificate")
    assert "validity" in response.headers["x-rah-emulator-detail"]


def test_shifted_clock_makes_a_fresh_signature_stale(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    emulator.shift_clock(-600)

    response = create_session(emulator, p256_key, leaf)

    assert_refused(response, 403, "AccessDeniedException", "Invalid signature")


def test_stop_releases_the_port_and_keeps_records(emulator_factory: Callable[..., Emulator], p256_key: Any, leaf: Any) -> None:
    emulator = emulator_factory()
    url = emulator.url
    create_session(emulator, p256_key, leaf)

    emulator.stop()

    with pytest.raises(httpx.TransportError):
        httpx.post(url + "/sessions", content=b"{}")
    assert len(emulator.issued) == 1


def test_context_manager_starts_and_stops(root_ca: CertificateAuthority, p256_key: Any, leaf: Any) -> None:
    with Emulator(EmulatorConfig.for_certificates([root_ca.certificate])) as emulator:
        assert create_session(emulator, p256_key, leaf).status_code == 201
    with pytest.raises(RuntimeError):
        emulator.url


def test_other_region_and_account_follow_the_trust_anchor_arn(
    emulator_factory: Callable[..., Emulator], p256_key: Any, leaf: Any,
) -> None:
    anchor = "arn:aws:rolesanywhere:eu-central-1:444455556666:trust-anchor/11111111-2222-3333-4444-555555555555"
    emulator = emulator_factory(trust_anchor_arn=anchor)

    assert emulator.region == "eu-central-1"
    assert emulator.profile_arn.startswith("arn:aws:rolesanywhere:eu-central-1:444455556666:profile/")
    assert emulator.role_arn == "arn:aws:iam::444455556666:role/rolesanywhere-hsm-emulator"
    assert create_session(emulator, p256_key, leaf).status_code == 201


def test_a_profile_in_another_account_is_a_usage_error(root_ca: CertificateAuthority) -> None:
    with pytest.raises(UsageError, match="not in this emulator's"):
        EmulatorConfig.for_certificates(
            [root_ca.certificate],
            profile_arn="arn:aws:rolesanywhere:us-east-1:999999999999:profile/11111111-2222-3333-4444-555555555555",
        )


def test_default_arns_are_stable_for_a_ca(root_ca: CertificateAuthority) -> None:
    first = EmulatorConfig.for_certificates([root_ca.certificate])
    second = EmulatorConfig.for_certificates([root_ca.certificate])
    other = EmulatorConfig.for_certificates([CertificateAuthority.create("other").certificate])

    assert (first.trust_anchor_arn, first.profile_arn) == (second.trust_anchor_arn, second.profile_arn)
    assert first.trust_anchor_arn != other.trust_anchor_arn


def test_keep_alive_connection_serves_several_requests(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    with httpx.Client() as client:
        for _ in range(3):
            signed = sign(emulator, p256_key, leaf)
            response = client.post(signed.url, content=signed.body, headers=signed.headers)
            assert response.status_code == 201
    assert len(emulator.issued) == 3
