"""PC/SC through libpcsclite with ctypes: just enough to send a PIV card a few APDUs.

Why not a PKCS#11 call: OpenSC (and most PIV modules other than Yubico's ykcs11) do not expose
the YubiKey's ATTEST instruction, so `attest` talks to the card directly, as `ykman` does.
Why ctypes and not pyscard: five functions of a library every smart-card host already has
(pcscd's client library) do not justify a compiled dependency. The reader is the one the
PKCS#11 module named in the token's slot description, and the card is opened shared, so a
module holding it open in another process is not disturbed. Nothing here sends a PIN.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rolesanywhere_hsm.errors import TokenError

__all__ = ["Card", "CardStatusError", "connect"]

# pcsclite's winscard.h on Linux: DWORD and LONG are C longs.
_SCOPE_SYSTEM = 2
_SHARE_SHARED = 2
_PROTOCOL_T0, _PROTOCOL_T1 = 1, 2
_LEAVE_CARD = 0
_MAX_READERS_BUFFER = 65536


class _IoRequest(ctypes.Structure):
    _fields_ = [("dwProtocol", ctypes.c_ulong), ("cbPciLength", ctypes.c_ulong)]


class CardStatusError(Exception):
    """The card answered a status word other than 9000 (kept as `sw`, e.g. 0x6985)."""

    def __init__(self, sw: int, what: str) -> None:
        super().__init__(f"{what}: status {sw:04X}")
        self.sw = sw


def _library() -> Any:
    name = ctypes.util.find_library("pcsclite") or "libpcsclite.so.1"
    try:
        return ctypes.CDLL(name)
    except OSError:
        raise TokenError("The PC/SC library (libpcsclite) is not installed, so the card cannot be "
                         "asked directly.", hint="Install pcscd and libpcsclite1 (Debian) or pcsc-lite.") from None


def _check(rv: int, what: str) -> None:
    if rv != 0:
        # SCARD_E_NO_SERVICE 0x8010001D, SCARD_E_NO_SMARTCARD 0x8010000C, ...
        raise TokenError(f"PC/SC refused {what} (error 0x{rv & 0xFFFFFFFF:08X}).",
                         hint="Check that pcscd runs and the card is inserted (`opensc-tool --list-readers`).")


class Card:
    """A connected card: `transmit(apdu)` returns (data, sw) after following 61xx."""

    def __init__(self, lib: Any, handle: ctypes.c_long, protocol: int) -> None:
        self._lib = lib
        self._handle = handle
        self._pci = _IoRequest(protocol, ctypes.sizeof(_IoRequest))

    def _raw(self, apdu: bytes) -> bytes:
        buffer = (ctypes.c_ubyte * 65538)()
        length = ctypes.c_ulong(len(buffer))
        sent = (ctypes.c_ubyte * len(apdu)).from_buffer_copy(apdu)
        _check(self._lib.SCardTransmit(self._handle, ctypes.byref(self._pci), sent, ctypes.c_ulong(len(apdu)),
                                       None, buffer, ctypes.byref(length)), "sending a command to the card")
        return bytes(buffer[:length.value])

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        answer = self._raw(apdu)
        data = b""
        while True:
            if len(answer) < 2:
                raise TokenError("The card gave an answer shorter than a status word.")
            data += answer[:-2]
            sw1, sw2 = answer[-2], answer[-1]
            if sw1 == 0x61:  # more data: GET RESPONSE
                answer = self._raw(bytes([0x00, 0xC0, 0x00, 0x00, sw2]))
                continue
            if sw1 == 0x6C:  # wrong Le: the card says the right one
                answer = self._raw(apdu[:4] + bytes([sw2]))
                data = b""
                continue
            return data, (sw1 << 8) | sw2

    def send(self, apdu: bytes, what: str) -> bytes:
        data, sw = self.transmit(apdu)
        if sw != 0x9000:
            raise CardStatusError(sw, what)
        return data


def _readers(lib: Any, context: ctypes.c_long) -> list[str]:
    length = ctypes.c_ulong(_MAX_READERS_BUFFER)
    buffer = ctypes.create_string_buffer(_MAX_READERS_BUFFER)
    rv = lib.SCardListReaders(context, None, buffer, ctypes.byref(length))
    if rv & 0xFFFFFFFF == 0x8010002E:  # SCARD_E_NO_READERS_AVAILABLE
        return []
    _check(rv, "listing the readers")
    return [r.decode("utf-8", "replace") for r in buffer.raw[:length.value].split(b"\0") if r]


@contextmanager
def connect(reader_hint: str) -> Iterator[Card]:
    """Connect (shared) to the reader whose name equals `reader_hint` or starts with it (a
    PKCS#11 slot description may be cut to 64 characters, or padded)."""
    lib = _library()
    for name in ("SCardEstablishContext", "SCardListReaders", "SCardConnect", "SCardTransmit",
                 "SCardDisconnect", "SCardReleaseContext"):
        getattr(lib, name).restype = ctypes.c_long
    context = ctypes.c_long()
    _check(lib.SCardEstablishContext(ctypes.c_ulong(_SCOPE_SYSTEM), None, None, ctypes.byref(context)),
           "a connection to the smart card service")
    try:
        hint = reader_hint.strip()
        readers = _readers(lib, context)
        matches = [r for r in readers if r == hint] or [r for r in readers if hint and r.startswith(hint)]
        if len(matches) != 1:
            raise TokenError(f"The PC/SC reader {hint!r} of the token was not found "
                             f"(readers: {', '.join(readers) or 'none'}).",
                             hint="Check that the card is still inserted.")
        handle = ctypes.c_long()
        protocol = ctypes.c_ulong()
        _check(lib.SCardConnect(context, matches[0].encode(), ctypes.c_ulong(_SHARE_SHARED),
                                ctypes.c_ulong(_PROTOCOL_T0 | _PROTOCOL_T1), ctypes.byref(handle),
                                ctypes.byref(protocol)), f"connecting to the card in {matches[0]!r}")
        try:
            yield Card(lib, handle, protocol.value)
        finally:
            lib.SCardDisconnect(handle, ctypes.c_ulong(_LEAVE_CARD))
    finally:
        lib.SCardReleaseContext(context)
