"""The time budget of the call in progress, enforced at each socket operation.

Per-operation timeouts restart with every byte, so a server that drips one byte a second never
times out. Both HTTP paths (the standard-library one, rolesanywhere_hsm.directhttp, and the
httpx one, rolesanywhere_hsm.httpxpath) instead cut every name lookup, connect, TLS handshake,
write and read to the time left on the deadline of the call in progress on this thread (a
context variable: one client may serve several threads, each with its own call and deadline),
and record the phase the call is in so that the error can name it.
"""

from __future__ import annotations

import contextvars
import socket
import threading

from rolesanywhere_hsm.deadline import Deadline

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["CONNECTING", "RESOLVING", "SENDING", "TLS", "WAITING", "WATCH", "Watch", "is_ip_literal",
           "limit", "phase_words", "resolve"]

RESOLVING = "looking up the address"
CONNECTING = "connecting"
TLS = "in the TLS handshake"
SENDING = "sending the request"
WAITING = "waiting for the answer"


class Watch:
    """The deadline of the call in progress on this thread, and the phase it is in (assigned
    as the call goes: a plain class with slots, no dataclass on the cold path)."""

    __slots__ = ("deadline", "phase")

    def __init__(self, deadline: Deadline, phase: str = CONNECTING) -> None:
        self.deadline = deadline
        self.phase = phase


WATCH: contextvars.ContextVar[Watch | None] = contextvars.ContextVar("rah_deadline", default=None)


def phase_words(phase: str) -> str:
    """How an error message names `phase` before the endpoint ("connecting to https://...")."""
    return {
        RESOLVING: "looking up the address of",
        CONNECTING: "connecting to",
        TLS: "in the TLS handshake with",
        SENDING: "sending the request to",
        WAITING: "waiting for the answer of",
    }.get(phase, "talking to")


def limit(timeout: float | None, phase: str, timeout_error: type[Exception]) -> float | None:
    """`timeout` cut to the time left on this thread's deadline; `timeout_error` at zero."""
    watch = WATCH.get()
    if watch is None:
        return timeout
    watch.phase = phase
    left = watch.deadline.remaining()
    if left <= 0:  # settimeout(0) would make the socket non-blocking, not time out
        raise timeout_error(f"the time budget ran out {phase}")
    return left if timeout is None else min(timeout, left)


def is_ip_literal(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve(host: str, port: int, timeout_error: type[Exception], connect_error: type[Exception]) -> list[str]:
    """The addresses of `host`, looked up within the time left: `getaddrinfo` takes no timeout
    and a broken resolver can hold it for tens of seconds, so it runs in a daemon thread that
    is abandoned (it ends on its own) when the budget runs out first. Each path passes its own
    error classes, so that the caller maps them as it maps its other connect failures."""
    left = limit(None, RESOLVING, timeout_error)
    outcome: list[Any] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            outcome.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except Exception as exc:  # noqa: BLE001 (handed to the waiting thread)
            outcome.append(exc)
        finally:
            done.set()

    threading.Thread(target=lookup, name="rah-resolve", daemon=True).start()
    if not done.wait(left):
        raise timeout_error(f"the time budget ran out {RESOLVING}")
    if isinstance(outcome[0], UnicodeError):
        raise connect_error(f"the host name {host!r} is not valid")
    if isinstance(outcome[0], Exception):
        raise connect_error(str(outcome[0]))
    addresses = list(dict.fromkeys(info[4][0] for info in outcome[0]))
    if not addresses:
        raise connect_error(f"no address for {host!r}")
    return addresses
