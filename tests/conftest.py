"""Shared pytest setup. Fixtures live in one plugin module per subsystem, so that token,
emulator and PKI fixtures can grow apart without one file becoming a knot."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# Property tests share two cores with token daemons and, in CI, another xdist worker: a slow
# example is load, not a bug. No per-example deadline, and no "too slow" health check (each test
# still bounds its examples with max_examples).
settings.register_profile("rah", deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The fast tier (`-m fast`, for every change) tries fewer examples of the property tests that
# keep hypothesis's default of 100; a test's own @settings(max_examples=...) still holds. The
# whole suite (.ci/run, or pytest without `-m fast`) runs the full counts.
FAST_TIER_EXAMPLES = 25
settings.register_profile("rah-fast", parent=settings.get_profile("rah"), max_examples=FAST_TIER_EXAMPLES)
settings.load_profile("rah")

pytest_plugins = [
    "tests.markers",
    "pytester",  # tests/test_markers.py runs the markers plugin on a small suite
    "tests.fixtures.pki",
    "tests.fixtures.emulator",
    "tests.fixtures.softhsm",
    "tests.fixtures.tpm",
    "tests.fixtures.tpmkey",
    "tests.fixtures.yubikey",
]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """In CI (RAH_REQUIRE_ALL_TOKENS=1) a skipped test is a failure: every skip in this suite
    means a token or tool is missing, and a green run that silently skipped the TPM or the
    virtual YubiKey would prove nothing."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("RAH_REQUIRE_ALL_TOKENS") == "1":
        report.outcome = "failed"
        report.longrepr = f"skipped, but RAH_REQUIRE_ALL_TOKENS=1 forbids skips: {report.longrepr}"


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("markexpr", "") == "fast":
        settings.load_profile("rah-fast")
