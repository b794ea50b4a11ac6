"""Shared pytest setup. Fixtures live in one plugin module per subsystem, so that token,
emulator and PKI fixtures can grow apart without one file becoming a knot."""

pytest_plugins = [
    "tests.fixtures.pki",
    "tests.fixtures.emulator",
    "tests.fixtures.softhsm",
    "tests.fixtures.tpm",
    "tests.fixtures.yubikey",
]

import os

import pytest

_TOKEN_MARKERS = ("softhsm", "tpm", "yubikey")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """In CI (RAH_REQUIRE_ALL_TOKENS=1) a token test that skips is a failure: a green run that
    silently skipped the TPM or the virtual YubiKey would prove nothing."""
    outcome = yield
    report = outcome.get_result()
    if (
        report.skipped
        and os.environ.get("RAH_REQUIRE_ALL_TOKENS") == "1"
        and any(item.get_closest_marker(m) for m in _TOKEN_MARKERS)
    ):
        report.outcome = "failed"
        report.longrepr = f"skipped, but RAH_REQUIRE_ALL_TOKENS=1 forbids skipping token tests: {report.longrepr}"
