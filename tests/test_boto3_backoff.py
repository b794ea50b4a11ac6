"""The boto3 provider backs off while the endpoint (or the token) is down (issue 16 item 23):
botocore asks for a refresh on every call; without a backoff each call was a CreateSession
(and a signature on the token)."""

from __future__ import annotations

from typing import Any

import pytest

from rolesanywhere_hsm.botocore_provider import RolesAnywhereCredentialProvider, spec_from_options
from rolesanywhere_hsm.emulator import Emulator
from rolesanywhere_hsm.errors import CredentialsUnavailableError, TransportError

pytest.importorskip("botocore")


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def provider(server: Emulator, leaf: Any, mono: Monotonic) -> RolesAnywhereCredentialProvider:
    spec = spec_from_options(None, {}, certificate=str(leaf.certificate), private_key=str(leaf.key),
                             trust_anchor_arn=server.trust_anchor_arn, profile_arn=server.profile_arn,
                             role_arn=server.role_arn, endpoint=server.url, timeout=5)
    return RolesAnywhereCredentialProvider(spec, rng=lambda: 0.5, monotonic=mono)


def test_calls_inside_the_backoff_do_not_reach_the_endpoint(emulator: Emulator, leaf_files: dict[str, Any]) -> None:
    mono = Monotonic()
    p = provider(emulator, leaf_files["p256"], mono)
    try:
        emulator.inject_failures([500] * 9)  # three fetches of three attempts each
        credentials = p.load()
        for _ in range(20):
            with pytest.raises((TransportError, CredentialsUnavailableError)):
                credentials.get_frozen_credentials()
        assert p.failure_count == 1 and len(emulator.requests) == 3  # one fetch, not twenty
        mono.now += 0.5  # the first backoff: 0.5 of 1 s
        with pytest.raises(TransportError):
            credentials.get_frozen_credentials()
        assert p.failure_count == 2 and len(emulator.requests) == 6
        mono.now += 0.99  # the second: 0.5 of 2 s, not yet over
        with pytest.raises(CredentialsUnavailableError) as info:
            credentials.get_frozen_credentials()
        assert "last attempt failed" in info.value.message and len(emulator.requests) == 6
        mono.now += 0.02
        with pytest.raises(TransportError):
            credentials.get_frozen_credentials()
        mono.now += 2.0  # the endpoint is back: the next call after the backoff gets credentials
        frozen = credentials.get_frozen_credentials()
        assert frozen.access_key == emulator.last_issued.access_key_id
        assert p.refresh_count == 1 and p.failure_count == 3
    finally:
        p.close()
