"""`serve`'s access log: one line per answer, `PREFIX: TIME CLIENT "METHOD TARGET" STATUS BYTES
MSms`, no secret (paths and statuses only, never a header; an odd or long target is cut to 200
characters and redacted).

Why it is written this way: under 50 keep-alive clients a credential GET costs the server a few
tens of microseconds, and formatting a line per request in the answer's path was a noticeable
part of that. An answer only appends its raw facts to a list here, through a plain function
(an object's __call__ costs the interpreter more); the lines are formatted and written together
when the HTTP layer flushes (every quarter second) or every FLUSH_EVERY answers, a batch with
one `%` operation and C-level maps instead of a Python loop per line, and a batch where one
client asked one thing (the usual case) looks its line start up once. Measured in instructions
(callgrind, a keep-alive IMDS credential GET driven in memory): the log's share went from about
9,200 to 7,000 of 31,600. The lines, their order and their content are those a line-at-a-time
log would write: each keeps the second its answer was given, taken when it was given.
"""

from __future__ import annotations

import sys
import time
from itertools import repeat
from operator import mul
from typing import Any, TextIO

from rolesanywhere_hsm.httpserver import AccessLog
from rolesanywhere_hsm.redact import redact

__all__ = ["FLUSH_EVERY", "access_logger"]

FLUSH_EVERY = 256  # answers held at most before they are formatted and written (a bound on memory)
_REMEMBERED = 256  # distinct line starts remembered (a keep-alive client asks the same thing again)
_LINE = "%s%.1fms\n"
# What an answer leaves, as seven consecutive items of one flat list (no tuple per answer: a
# container held until the flush would be tracked by the garbage collector, which then runs
# every few hundred answers): time.time() when answered, client address, method, target,
# status, body size, seconds taken.
_FIELDS = 7
_HELD = FLUSH_EVERY * _FIELDS


class _AccessLog:
    def __init__(self, stream: TextIO, prefix: str) -> None:
        self._stream = stream
        self._prefix = prefix
        self._entries: list[float | str | int] = []
        self._second = 0
        self._stamp = ""  # "PREFIX: TIME " of that second
        # (client address, method, target, status, size) -> 'CLIENT "METHOD TARGET" STATUS SIZE '
        self._middles: dict[tuple[str, str, str, int, int], str] = {}
        self._starts: dict[tuple[str, str, str, int, int], str] = {}  # the same -> stamp + middle, this second

    def flush(self) -> None:
        entries = self._entries
        if not entries:
            return
        text = self._format(entries)
        entries.clear()  # the same list: access_logger's function holds it
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # stderr gone (a closed pipe): serving matters more
            pass

    def _format(self, entries: list[Any]) -> str:
        walls = entries[0::_FIELDS]
        if int(min(walls)) == int(max(walls)):  # nearly always: one second (the clock may step back)
            return self._format_second(int(walls[0]), entries)
        seconds = list(map(int, walls))
        parts, begin = [], 0
        for index in range(1, len(seconds) + 1):  # runs of one second each, in order
            if index == len(seconds) or seconds[index] != seconds[begin]:
                parts.append(self._format_second(seconds[begin], entries[begin * _FIELDS:index * _FIELDS]))
                begin = index
        return "".join(parts)

    def _format_second(self, second: int, entries: list[Any]) -> str:
        if second != self._second:
            self._second = second
            self._stamp = "%s: %s " % (self._prefix, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
            self._starts.clear()
        count = len(entries) // _FIELDS
        columns = [entries[field::_FIELDS] for field in range(1, 6)]
        starts: list[str | None]
        if all(column.count(column[0]) == count for column in columns):  # often: one client asking one thing
            first = (columns[0][0], columns[1][0], columns[2][0], columns[3][0], columns[4][0])
            starts = [self._starts.get(first) or self._start(first)] * count
        else:
            what = list(zip(*columns))
            starts = list(map(self._starts.get, what))
            if None in starts:
                for index, start in enumerate(starts):
                    if start is None:
                        starts[index] = self._start(what[index])
        values: list[object] = [None] * (2 * count)
        values[0::2] = starts
        values[1::2] = map(mul, entries[6::_FIELDS], repeat(1000))
        return (_LINE * count) % tuple(values)

    def _start(self, what: tuple[str, str, str, int, int]) -> str:
        """'PREFIX: TIME CLIENT "METHOD TARGET" STATUS SIZE ' for this second."""
        middle = self._middles.get(what)
        if middle is None:
            address, method, target, status, size = what
            shown = target if target.isascii() and len(target) <= 200 else redact(target[:200])
            middle = '%s "%s %s" %d %d ' % (address, method, shown, status, size)
            if shown is target:  # an odd or long target is not worth remembering
                if len(self._middles) >= _REMEMBERED:
                    self._middles.clear()
                self._middles[what] = middle
        start = self._stamp + middle
        if len(self._starts) < _REMEMBERED and middle is self._middles.get(what):
            self._starts[what] = start
        return start


def access_logger(stream: TextIO | None = None, prefix: str = "serve") -> AccessLog:
    """An AccessLog writing `prefix: TIME CLIENT "METHOD TARGET" STATUS BYTES MSms` lines to
    `stream` (stderr by default); the HTTP layer calls its `flush()` on every sweep and at close."""
    log = _AccessLog(stream if stream is not None else sys.stderr, prefix)
    entries, flush, clock = log._entries, log.flush, time.time

    # A plain function, not an object's __call__: the layer calls it once per answer, and a
    # function call costs the interpreter a good deal less.
    def record(client: tuple[str, int], method: str, target: str, status: int, size: int, seconds: float) -> None:
        entries.extend((clock(), client[0], method, target, status, size, seconds))
        if len(entries) >= _HELD:
            flush()

    record.flush = flush  # type: ignore[attr-defined]
    return record
