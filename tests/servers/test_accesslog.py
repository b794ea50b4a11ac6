"""The access log formats its lines in batches (issue 21): the lines, their order and content
must be those of a log written a line at a time, each stamped with the second of its answer,
and what it holds before writing is bounded."""

from __future__ import annotations

import io
import time

import pytest

from rolesanywhere_hsm.servers import accesslog
from rolesanywhere_hsm.servers.accesslog import FLUSH_EVERY, access_logger


def one_line(prefix: str, when: float, address: str, method: str, target: str, status: int, size: int,
             seconds: float) -> str:
    """The line as the format says, written for one answer on its own."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(when)))
    return f'{prefix}: {stamp} {address} "{method} {target}" {status} {size} {seconds * 1000:.1f}ms\n'


def test_batched_lines_keep_their_order_and_the_second_they_were_answered_in(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_800_000_000.6]
    monkeypatch.setattr(accesslog.time, "time", lambda: clock[0])
    stream = io.StringIO()
    log = access_logger(stream, prefix="p")
    expected = []
    steps = [0.0, 0.3, 0.3, 0.0, -0.5, 0.2, 1.9, 0.0]  # across seconds, and once back (a clock step)
    for i, step in enumerate(steps * 3):
        clock[0] += step
        address, target, status = f"127.0.0.{i % 3}", f"/p/{i % 4}", (200, 401)[i % 2]
        log((address, 1000 + i), "GET", target, status, i, i / 7000)
        expected.append(one_line("p", clock[0], address, "GET", target, status, i, i / 7000))
    assert stream.getvalue() == ""  # nothing formatted or written on an answer's path
    log.flush()  # type: ignore[attr-defined]
    assert stream.getvalue() == "".join(expected)


def test_at_most_flush_every_answers_are_held() -> None:
    stream = io.StringIO()
    log = access_logger(stream, prefix="p")
    for i in range(FLUSH_EVERY - 1):
        log(("127.0.0.1", 1), "GET", "/", 200, 0, 0.0)
    assert stream.getvalue() == ""
    log(("127.0.0.1", 1), "GET", "/", 200, 0, 0.0)
    assert len(stream.getvalue().splitlines()) == FLUSH_EVERY
