"""Fixtures of the attestation tests: the virtual card cleaned after each test, and keygen."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.provision.flow import cli, ok
from tests.tokens.yubikey import VirtualYubiKey

DEFAULT_MANAGEMENT_KEY = "010203040506070801020304050607080102030405060708"


@pytest.fixture
def card(yubikey: VirtualYubiKey) -> Iterator[VirtualYubiKey]:
    try:
        yield yubikey
    finally:
        yubikey.finalize_in_process()
        yubikey.forget_provisioned()


@pytest.fixture
def management_key_file(tmp_path: Path) -> str:
    path = tmp_path / "mgm.key"
    path.write_text(DEFAULT_MANAGEMENT_KEY + "\n")
    path.chmod(0o600)
    return f"file:{path}"


def generate(card: VirtualYubiKey, management_key_file: str, slot_id: str, key_type: str = "ec-p256") -> str:
    env = card.subprocess_env(card.ykcs11_module)
    return ok(cli(env, "keygen", "--token", f"pkcs11:token=YubiKey%20PIV%20%23{card.serial}",
                  "--key-type", key_type, "--label", "x", "--id", slot_id,
                  "--management-key-source", management_key_file))
