"""Shared pytest setup. Fixtures live in one plugin module per subsystem, so that token,
emulator and PKI fixtures can grow apart without one file becoming a knot."""

pytest_plugins = [
    "tests.fixtures.pki",
    "tests.fixtures.emulator",
    "tests.fixtures.softhsm",
    "tests.fixtures.tpm",
    "tests.fixtures.yubikey",
]
