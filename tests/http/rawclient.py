"""Raw-socket clients for the HTTP layer tests: bytes out, bytes back, nothing interpreted by a
client library (httpx would refuse to send most of what these tests send)."""

from __future__ import annotations

import re
import socket
import time

__all__ = ["exchange", "listening_addresses", "statuses"]

_STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")


def exchange(port: int, data: bytes, *, timeout: float = 10.0, half_close: bool = True) -> bytes:
    """Send `data`, half-close (so the server sees the end), read until the server closes."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused early and closed: what it answered is still readable
        chunks = []
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def statuses(answer: bytes) -> list[int]:
    """Status codes of every answer at the start of a line in `answer`."""
    found = []
    position = 0
    while True:
        match = _STATUS.match(answer, position)
        if match is None:
            break
        found.append(int(match.group(1)))
        head_end = answer.find(b"\r\n\r\n", position)
        length = re.search(rb"(?im)^content-length: (\d+)\r$", answer[position:head_end + 2])
        position = head_end + 4 + (int(length.group(1)) if length else 0)
    return found


def listening_addresses(port: int) -> set[str]:
    """The local addresses (IPv4 and IPv6, as the kernel lists them in /proc/net/tcp*) of the
    sockets listening on TCP `port` in this network namespace: {"127.0.0.1"} for a server bound
    to loopback, {"0.0.0.0"} or {"::"} for one bound to every interface."""
    import ipaddress

    found = set()
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            lines = open(table).read().splitlines()[1:]  # noqa: SIM115
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4))
            found.add(str(ipaddress.ip_address(raw)))
    return found
