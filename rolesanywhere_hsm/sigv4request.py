"""The SigV4-X509 headers of one CreateSession request: the one computation both HTTP paths use.

The standard-library path (rolesanywhere_hsm.directhttp) and the httpx path
(rolesanywhere_hsm.httpxpath) hand the same request parts here and add the headers it returns,
so that what is signed, and how, cannot differ between them (a test sends one request through
each to a loopback server and compares the signed headers). Each call asks the signer for
exactly one signature, with a new `X-Amz-Date`: every attempt, retries included, is signed
afresh. Reference: docs/protocol.md section 3.
"""

from __future__ import annotations

import datetime as dt

from rolesanywhere_hsm import sigv4x509
from rolesanywhere_hsm.lazylog import get_logger
from rolesanywhere_hsm.x509 import certificate_info

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from rolesanywhere_hsm.signers.base import Signer

__all__ = ["RequestSigner"]

# The canonical request is logged under the client's name, as it always was.
log = get_logger("rolesanywhere_hsm.client")  # logging only when a line can show


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class RequestSigner:
    """Signs requests with `signer` for `region`; the certificate headers are encoded once."""

    __slots__ = ("_chain", "_clock", "_region", "_serial", "_signer", "_x509")

    def __init__(self, signer: Signer, region: str, clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self._signer = signer
        self._region = region
        self._clock = clock
        self._serial = certificate_info(signer.certificate).serial
        self._x509 = sigv4x509.encode_certificate(signer.certificate)
        self._chain = sigv4x509.encode_chain(signer.chain) if signer.chain else None

    def headers(self, method: str, path: str, query: Mapping[str, Sequence[str]], *, host: str,
                content_type: str, body: bytes) -> list[tuple[str, str]]:
        """The headers to add, in the order they are sent: X-Amz-Date, X-Amz-X509,
        X-Amz-X509-Chain (with intermediates), Authorization. `query` maps names to their
        decoded values; `host` is the Host header as sent."""
        date = sigv4x509.amz_date(self._clock())
        added = [("X-Amz-Date", date), ("X-Amz-X509", self._x509)]
        signed = {"content-type": content_type, "host": host, "x-amz-date": date, "x-amz-x509": self._x509}
        if self._chain:
            added.append(("X-Amz-X509-Chain", self._chain))
            signed["x-amz-x509-chain"] = self._chain
        canonical = sigv4x509.canonical_request(method, path, query, signed, body)
        log.debug("canonical request:\n%s", canonical)
        to_sign = sigv4x509.string_to_sign(self._signer.algorithm, date, self._region, canonical)
        signature = self._signer.sign(to_sign.encode("utf-8"))
        added.append(("Authorization", sigv4x509.authorization_header(
            self._signer.algorithm, self._serial, date, self._region, signed, signature)))
        return added
