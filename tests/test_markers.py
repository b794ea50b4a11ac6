"""The test tiers' markers (tests/markers.py): set from fixtures and helpers, registered, and the
README's fast-tier command selects what the plugin calls the fast tier."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests import markers
from tests.clirunner import run_cli, run_process

ROOT = Path(__file__).resolve().parents[1]


def test_every_marker_is_registered_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    registered = {line.split(":")[0] for line in config["tool"]["pytest"]["ini_options"]["markers"]}
    assert set(markers.MARKERS) <= registered


def test_the_readme_shows_the_fast_tier() -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"python -m pytest -m {markers.FAST} -n 2\n" in readme
    assert "bash .ci/run" in readme


def test_fast_is_exactly_the_tests_without_a_slow_tier_marker(request: pytest.FixtureRequest) -> None:
    """`-m fast` selects what the long expression FAST_TIER selects, in this run's collection."""
    assert request.node.get_closest_marker(markers.FAST) is not None  # this test is in the tier
    checked = 0
    for item in request.session.items:
        marks = {mark.name for mark in item.iter_markers()}
        assert (markers.FAST in marks) == (not marks & set(markers.SLOW_TIER_MARKERS)), item.nodeid
        checked += 1
    assert checked >= 1


def test_fast_cannot_be_set_by_hand(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("pytest_plugins = ['tests.markers']\n")
    pytester.makeini("[pytest]\nmarkers =\n    fast: x\n    slow: x\n")
    pytester.makepyfile(test_hand="import pytest\n@pytest.mark.fast\n@pytest.mark.slow\ndef test_x():\n    pass\n")
    pytester.syspathinsert(ROOT)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:benchmark", "-p", "no:xdist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "`fast` is set by tests/markers.py, not by hand" in result.stderr.str()


def test_only_the_fast_tier_tries_fewer_hypothesis_examples(request: pytest.FixtureRequest) -> None:
    from hypothesis import settings

    from tests.conftest import FAST_TIER_EXAMPLES

    fast_run = request.config.getoption("markexpr") == markers.FAST
    assert settings.default.max_examples == (FAST_TIER_EXAMPLES if fast_run else 100)


def _spawns() -> None:
    subprocess.run(["true"], check=True)


def _spawns_through_a_helper() -> None:
    _spawns()


def _runs_the_cli_in_a_process() -> None:
    run_process("--version")


def _runs_the_cli_in_process() -> None:
    run_cli("--version")


def _starts_python() -> str:
    import sys

    return f"cmd:{sys.executable} -c 'print(1)'"


@pytest.mark.parametrize(("function", "expected"), [
    (_spawns, {"process"}),
    (_spawns_through_a_helper, {"process"}),
    (_runs_the_cli_in_a_process, {"process"}),
    (_runs_the_cli_in_process, set()),
    (_starts_python, {"process"}),
    (lambda: len("subprocess"), set()),  # a word in a string is not a call
])
def test_the_scan_finds_processes_through_helpers(function: object, expected: set[str]) -> None:
    assert markers.scan(function) == expected


def test_token_fixtures_mark_the_tests_that_use_them(request: pytest.FixtureRequest) -> None:
    """Collected in this run: a test that takes `softhsm_token` carries `softhsm`, one that takes
    `tpm` carries `tpm`, and this test (no token, no process) carries neither."""
    items = {item.nodeid.split("::")[-1]: item for item in request.session.items}
    own = {mark.name for mark in request.node.iter_markers()}
    assert not own & {"softhsm", "tpm", "tpmkey", "yubikey", "process"}
    for item in items.values():
        names = set(getattr(item, "fixturenames", ()))
        marks = {mark.name for mark in item.iter_markers()}
        if "softhsm_token" in names:
            assert "softhsm" in marks, item.nodeid
        if names & {"tpm", "tpm_token"}:
            assert "tpm" in marks, item.nodeid
        if "tpm_key_files" in names:
            assert "tpmkey" in marks, item.nodeid
        if "virtual_yubikey" in names:
            assert "yubikey" in marks, item.nodeid


@pytest.mark.process  # the inner test starts Python (that is the point)
def test_a_fast_tier_test_that_starts_python_fails(pytester: pytest.Pytester) -> None:
    """The guard: a test the scan cannot see through (the process starts in code outside the
    tests package) fails in the fast tier and says which marker to add."""
    pytester.makeconftest("pytest_plugins = ['tests.markers']\n")
    pytester.makepyfile(test_guard=(
        "import sys, functools, subprocess\n"
        "start = functools.partial(subprocess.run, [sys.executable, '-c', 'pass'])\n"
        "def test_hidden():\n"
        "    start()\n"))
    pytester.syspathinsert(ROOT)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:benchmark", "-p", "no:xdist",
                                          "-m", markers.FAST_TIER)
    result.assert_outcomes(failed=1)
    assert re.search(r"started a Python process .* add @pytest.mark.process", result.stdout.str())
