"""SigV4 with an X.509 key, as Roles Anywhere's CreateSession wants it: pure functions, no I/O.

Everything here is deterministic text so that known-answer tests can pin it against an oracle
we did not write (botocore's SigV4 canonicalisation). The private key is not involved: the
caller hands `string_to_sign(...).encode()` to a Signer and passes the signature back to
`authorization_header`. Reference: docs/protocol.md section 3.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import quote

__all__ = [
    "ALGORITHM_ECDSA",
    "ALGORITHM_MLDSA",
    "ALGORITHM_RSA",
    "SERVICE",
    "amz_date",
    "authorization_header",
    "canonical_headers",
    "canonical_query",
    "canonical_request",
    "credential_scope",
    "encode_chain",
    "encode_certificate",
    "signed_headers",
    "string_to_sign",
]

SERVICE = "rolesanywhere"

# docs/protocol.md section 3: the algorithm depends on the key type only, never on the hash the
# CA used. ML-DSA is pure ML-DSA over the string to sign with an empty context (no digest).
ALGORITHM_RSA = "AWS4-X509-RSA-SHA256"
ALGORITHM_ECDSA = "AWS4-X509-ECDSA-SHA256"
ALGORITHM_MLDSA = "AWS4-X509-MLDSA"
_TERMINATOR = "aws4_request"
_SPACES = re.compile(r" +")
# RFC 3986 unreserved characters; everything else is %XY with uppercase hex.
_UNRESERVED = "-_.~"


def amz_date(when: dt.datetime) -> str:
    """`X-Amz-Date` for an aware datetime: UTC `YYYYMMDDTHHMMSSZ`."""
    if when.tzinfo is None:
        raise ValueError("amz_date needs a timezone-aware datetime")
    return when.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _uri_encode(value: str) -> str:
    return quote(value, safe=_UNRESERVED)


def canonical_query(query: Mapping[str, str | Sequence[str]]) -> str:
    """Parameters sorted by encoded name then value, each part RFC 3986-encoded, joined by &."""
    pairs: list[tuple[str, str]] = []
    for name, value in query.items():
        values = [value] if isinstance(value, str) else list(value)
        pairs.extend((_uri_encode(name), _uri_encode(v)) for v in values)
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def _trim(value: str) -> str:
    return _SPACES.sub(" ", value.strip())


def canonical_headers(headers: Mapping[str, str]) -> str:
    """One `name:value` line per header, names lowercased and sorted, values trimmed with inner
    runs of spaces collapsed; each line ends with a newline (so the block ends in an empty line
    once joined into the canonical request)."""
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        key = name.strip().lower()
        if key in lowered:
            raise ValueError(f"header {key!r} given twice")
        lowered[key] = _trim(value)
    return "".join(f"{name}:{lowered[name]}\n" for name in sorted(lowered))


def signed_headers(names: Iterable[str]) -> str:
    return ";".join(sorted(n.strip().lower() for n in names))


def canonical_request(
    method: str,
    path: str,
    query: Mapping[str, str | Sequence[str]],
    headers: Mapping[str, str],
    body: bytes,
) -> str:
    """The canonical request; every header in `headers` is signed.

    `path` is used as given (it is `/sessions` for CreateSession, which needs no encoding),
    `query` maps names to unencoded values.
    """
    return "\n".join(
        [
            method.upper(),
            path or "/",
            canonical_query(query),
            canonical_headers(headers),
            signed_headers(headers.keys()),
            hashlib.sha256(body).hexdigest(),
        ]
    )


def credential_scope(date_stamp: str, region: str) -> str:
    return f"{date_stamp}/{region}/{SERVICE}/{_TERMINATOR}"


def string_to_sign(algorithm: str, amz_date_value: str, region: str, canonical: str) -> str:
    return "\n".join(
        [
            algorithm,
            amz_date_value,
            credential_scope(amz_date_value[:8], region),
            hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        ]
    )


def authorization_header(
    algorithm: str,
    serial: int,
    amz_date_value: str,
    region: str,
    signed_header_names: Iterable[str],
    signature: bytes,
) -> str:
    """`{ALG} Credential={serial}/{scope}, SignedHeaders={list}, Signature={hex}`; the serial is
    the leaf certificate's, in decimal."""
    return (
        f"{algorithm} Credential={serial}/{credential_scope(amz_date_value[:8], region)}, "
        f"SignedHeaders={signed_headers(signed_header_names)}, Signature={signature.hex()}"
    )


def encode_certificate(der: bytes) -> str:
    """`X-Amz-X509`: standard, padded, one-line base64 of the DER."""
    return base64.b64encode(der).decode("ascii")


def encode_chain(chain: Sequence[bytes]) -> str:
    """`X-Amz-X509-Chain`: intermediates' base64 DER joined by `,` with no spaces."""
    return ",".join(encode_certificate(c) for c in chain)
