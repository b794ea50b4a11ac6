"""The card side of vsmartcard's vpcd link, run as its own process: `python -m tests.vpiv.vpcd`.

pcscd's vpcd driver, configured with `DEVICENAME 127.0.0.1:<port>`, connects to us (client mode;
its server mode would listen on every interface). Each message either way is a 2-byte big-endian
length and a payload. From vpcd, a 1-byte payload is a control code (00 power off, 01 power on,
02 reset, 04 "send your ATR"); anything longer is a C-APDU to answer with an R-APDU. Power and
reset get no answer. vpcd drives two readers, on <port> and <port>+1: if nothing accepts on the
second port pcscd aborts ("bit out of range 0 - FD_SETSIZE"). Worse, vpcd 3.3 in client mode
cannot reconnect: once either connection closes, its next presence poll calls select() on
socket -1 and pcscd aborts the same way. So both connections stay open for pcscd's whole life
(stop pcscd before this process), and the second reader holds a blank card: an ATR, and
"file not found" / "instruction not supported" to every APDU, which both PKCS#11 modules
report as a slot without a (recognised) token.

A unix control socket (one JSON request per line, one JSON answer per line) lets the tests
reset the PIN retry counter, read counters and make the card refuse signatures
(`{"command": "refuse-signatures", "count": N, "sw": "6982"}`) without going through PC/SC.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.vpiv.card import PinPolicy, PivCard, SlotKey

__all__ = ["CardServer", "load_card", "main"]

DEFAULT_PORT = 0x8C7B  # 35963, vpcd's default; the second reader is on 35964
CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0x00, 0x01, 0x02, 0x04
# A minimal T=1 ATR (no historical bytes) for the blank card in the second reader.
BLANK_ATR = bytes.fromhex("3B80800101")


class CardServer:
    """A selector loop serving one card to vpcd and the control socket to the tests."""

    def __init__(self, card: PivCard, port: int, control_path: Path, host: str = "127.0.0.1") -> None:
        self.card = card
        self.selector = selectors.DefaultSelector()
        self.card_listener, self.empty_listener = self._listen_pair(host, port)
        self.port: int = self.card_listener.getsockname()[1]
        self.control_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.control_listener.bind(str(control_path))
        self.control_listener.listen(8)
        self.selector.register(self.card_listener, selectors.EVENT_READ, self._accept_card)
        self.selector.register(self.empty_listener, selectors.EVENT_READ, self._accept_empty)
        self.selector.register(self.control_listener, selectors.EVENT_READ, self._accept_control)
        self.buffers: dict[socket.socket, bytearray] = {}
        self.connections = 0
        self.running = True

    @staticmethod
    def _listen_tcp(host: str, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        sock.listen(4)
        return sock

    @classmethod
    def _listen_pair(cls, host: str, port: int) -> tuple[socket.socket, socket.socket]:
        """Listen on `port` and `port`+1; with port 0, on the first free pair the kernel offers
        (so that test sessions running side by side each get their own)."""
        for _ in range(1 if port else 50):
            first = cls._listen_tcp(host, port)
            chosen = first.getsockname()[1]
            try:
                return first, cls._listen_tcp(host, chosen + 1)
            except OSError:
                first.close()
                if port:
                    raise
        raise OSError(f"no free pair of ports on {host}")

    def serve_forever(self) -> None:
        while self.running:
            for key, _ in self.selector.select(timeout=1.0):
                key.data(key.fileobj)

    # -- vpcd -------------------------------------------------------------------------------
    def _accept_card(self, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # vpcd reconnects after any error: a new connection is a freshly inserted card.
        self.card.reset()
        self.connections += 1
        self.buffers[conn] = bytearray()
        self.selector.register(conn, selectors.EVENT_READ, self._read_card)

    def _accept_empty(self, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        self.buffers[conn] = bytearray()
        self.selector.register(conn, selectors.EVENT_READ, self._read_blank)

    def _read_card(self, conn: socket.socket) -> None:
        self._read(conn, self._handle)

    def _read_blank(self, conn: socket.socket) -> None:
        self._read(conn, _answer_blank)

    def _read(self, conn: socket.socket, handle: Callable[[bytes], bytes | None]) -> None:
        try:
            chunk = conn.recv(65536)
            # vpcd writes the length and the APDU with two send() calls and Nagle on: without
            # an immediate ACK of the length, the APDU waits out our delayed ACK (40 ms each).
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except ConnectionError:
            chunk = b""
        if not chunk:
            self._drop(conn)
            return
        buffer = self.buffers[conn]
        buffer += chunk
        while len(buffer) >= 2:
            size = int.from_bytes(buffer[:2], "big")
            if len(buffer) < 2 + size:
                break
            message = bytes(buffer[2:2 + size])
            del buffer[:2 + size]
            answer = handle(message)
            if answer is not None:
                try:
                    conn.sendall(len(answer).to_bytes(2, "big") + answer)
                except OSError:
                    self._drop(conn)
                    return

    def _handle(self, message: bytes) -> bytes | None:
        if len(message) == 1:
            code = message[0]
            if code == CTRL_ATR:
                return self.card.atr
            if code == CTRL_ON:
                self.card.power_on()
            elif code == CTRL_OFF:
                self.card.power_off()
            elif code == CTRL_RESET:
                self.card.reset()
            return None
        return self.card.transmit(message)

    def _drop(self, conn: socket.socket) -> None:
        self.selector.unregister(conn)
        self.buffers.pop(conn, None)
        conn.close()

    # -- control ----------------------------------------------------------------------------
    def _accept_control(self, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        conn.settimeout(5)
        try:
            with conn, conn.makefile("rwb") as stream:
                for line in stream:
                    stream.write(json.dumps(self._control(json.loads(line))).encode() + b"\n")
                    stream.flush()
        except (OSError, ValueError):
            pass

    def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request.get("command")
        if command == "reset-pin":
            self.card.reset_pin_retries()
        elif command == "set-pin":
            try:
                self.card.change_pin(str(request["pin"]))
            except (KeyError, ValueError) as exc:
                return {"ok": False, "error": str(exc)}
        elif command == "clear-counters":
            self.card.clear_counters()
        elif command == "forget-provisioned":
            self.card.forget_provisioned()
        elif command == "refuse-signatures":
            try:
                self.card.refuse_next_signatures(int(request["count"]), bytes.fromhex(request.get("sw", "6982")))
            except (KeyError, TypeError, ValueError) as exc:
                return {"ok": False, "error": str(exc)}
        elif command == "import-key":
            try:
                private_key = serialization.load_pem_private_key(Path(request["key"]).read_bytes(), None)
                cert = (x509.load_pem_x509_certificate(Path(request["cert"]).read_bytes())
                        if request.get("cert") else None)
                self.card.import_key(int(request["slot"], 16), private_key, cert,
                                     PinPolicy[str(request.get("pin_policy", "once")).upper()])
            except (KeyError, TypeError, ValueError, OSError) as exc:
                return {"ok": False, "error": str(exc)}
        elif command == "log":
            return {"ok": True, "log": list(self.card.log)}
        elif command == "stop":
            self.running = False
        elif command not in ("status", "ping"):
            return {"ok": False, "error": f"unknown command {command!r}"}
        return {"ok": True, "port": self.port, "connections": self.connections, **self.card.status()}


def _answer_blank(message: bytes) -> bytes | None:
    """The card in the second reader: present, but with no application anyone knows."""
    if len(message) == 1:
        return BLANK_ATR if message[0] == CTRL_ATR else None
    if len(message) >= 2 and message[1] == 0xA4:
        return b"\x6a\x82"
    return b"\x6d\x00"


def load_card(config_path: Path) -> PivCard:
    """Build the card from the JSON the fixture wrote (key and certificate PEM paths per slot)."""
    config = json.loads(config_path.read_text())
    keys: dict[int, SlotKey] = {}
    for entry in config["slots"]:
        slot = int(entry["slot"], 16)
        private_key = serialization.load_pem_private_key(Path(entry["key"]).read_bytes(), None)
        cert = x509.load_pem_x509_certificate(Path(entry["cert"]).read_bytes()) if entry.get("cert") else None
        keys[slot] = SlotKey(slot, private_key, cert, PinPolicy[entry["pin_policy"].upper()])
    attestation = None
    if config.get("attestation"):
        attestation = (
            serialization.load_pem_private_key(Path(config["attestation"]["key"]).read_bytes(), None),
            x509.load_pem_x509_certificate(Path(config["attestation"]["cert"]).read_bytes()),
        )
    return PivCard(keys, serial=config["serial"], pin=config["pin"],
                   version=tuple(config.get("version", (5, 4, 3))), attestation=attestation)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--control", type=Path, required=True)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0: pick a free pair")
    args = parser.parse_args(argv)
    server = CardServer(load_card(args.config), args.port, args.control)
    # SIGTERM from the fixture: unwind through SystemExit so the sockets close cleanly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"vpiv card ready on 127.0.0.1:{server.port} (pid {os.getpid()})", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
