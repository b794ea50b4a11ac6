"""The sd_notify protocol: one datagram of `KEY=VALUE` lines to the socket named by
`$NOTIFY_SOCKET`, which a service manager (systemd with `Type=notify`) sets.

No dependency (no libsystemd, no python-systemd): the protocol is a plain `AF_UNIX` datagram,
to a path or, when the name starts with `@`, to an abstract socket. Outside a service manager
`$NOTIFY_SOCKET` is unset and every call is a no-op. A failure to notify is logged, never
raised: the service's work matters more than its supervisor's bookkeeping (systemd times the
start out by itself if READY=1 never arrives).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["notify", "notify_address", "watchdog_interval"]

log = logging.getLogger("rolesanywhere_hsm.sdnotify")


def notify_address(environ: Mapping[str, str] = os.environ) -> str | bytes | None:
    """The address to send to, from `$NOTIFY_SOCKET`: a filesystem path, or an abstract name
    (`@name` becomes the bytes `\\0name`); None when unset or of a kind we do not speak (vsock)."""
    name = environ.get("NOTIFY_SOCKET", "")
    if name.startswith("@") and len(name) > 1:
        return b"\0" + name[1:].encode()
    if name.startswith("/"):
        return name
    return None


def notify(message: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send `message` (e.g. "READY=1\\nSTATUS=serving"); True if a datagram was sent."""
    address = notify_address(environ)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(1.0)  # a datagram send does not block on a live manager; never hang
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("could not notify the service manager (%s)", exc.strerror or type(exc).__name__)
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] = os.environ, pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3)
    advises; None when no watchdog is set, or it is meant for another process
    (`$WATCHDOG_PID`)."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    if usec <= 0:
        return None
    return usec / 2_000_000
