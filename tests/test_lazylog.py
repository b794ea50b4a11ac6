"""lazylog: a debug line costs no `import logging` until something has loaded logging, and
then every line reaches the real logger, attributed to its caller."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from rolesanywhere_hsm.lazylog import get_logger

ROOT = Path(__file__).parents[1]


def test_a_debug_line_imports_nothing_and_a_warning_is_shown() -> None:
    code = ("import sys\nfrom rolesanywhere_hsm.lazylog import get_logger\n"
            "log = get_logger('rolesanywhere_hsm.x')\nlog.debug('quiet %s', 1)\nlog.info('quiet too')\n"
            "print('after debug', 'logging' in sys.modules)\nlog.warning('shown %s', 2)\n"
            "print('after warning', 'logging' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, env={"PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["after debug False", "after warning True"]
    assert done.stderr.strip() == "shown 2"  # logging's last-resort handler, as before
    assert "quiet" not in done.stderr


def test_once_logging_is_loaded_lines_reach_the_named_logger_from_their_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="rolesanywhere_hsm.lazy-test")
    log = get_logger("rolesanywhere_hsm.lazy-test")
    log.debug("a %s line", "debug")
    log.info("an info line")
    log.warning("a warning")
    assert [(r.levelname, r.getMessage(), r.name) for r in caplog.records] == [
        ("DEBUG", "a debug line", "rolesanywhere_hsm.lazy-test"),
        ("INFO", "an info line", "rolesanywhere_hsm.lazy-test"),
        ("WARNING", "a warning", "rolesanywhere_hsm.lazy-test"),
    ]
    assert {r.funcName for r in caplog.records} == {
        "test_once_logging_is_loaded_lines_reach_the_named_logger_from_their_caller"}
    assert log.isEnabledFor(logging.DEBUG)  # anything else goes to the real logger
