"""Raw-socket clients for the HTTP layer tests: bytes out, bytes back, nothing interpreted by a
client library (httpx would refuse to send most of what these tests send)."""

from __future__ import annotations

import re
import socket
import time

__all__ = ["exchange", "statuses"]

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
