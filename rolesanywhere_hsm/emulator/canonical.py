"""The emulator's own SigV4 canonicalisation, rebuilt from the bytes a client sent.

It is written apart from `rolesanywhere_hsm.sigv4x509` (the client's) on purpose: if both
shared one code path, a bug there would sign and verify the same wrong string and every test
would pass. Known-answer tests against botocore (tests/oracle.py) pin both. The rules are
docs/protocol.md section 3.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

__all__ = [
    "ALGORITHMS",
    "SERVICE",
    "Authorization",
    "AuthorizationSyntaxError",
    "canonical_headers",
    "canonical_query",
    "canonical_request",
    "parse_authorization",
    "string_to_sign",
]

# docs/protocol.md section 3: the algorithm names and the key type each one requires.
ALGORITHMS: dict[str, str] = {
    "AWS4-X509-RSA-SHA256": "RSA",
    "AWS4-X509-ECDSA-SHA256": "EC",
    "AWS4-X509-MLDSA": "ML-DSA",
}
SERVICE = "rolesanywhere"
_TERMINATOR = "aws4_request"
_HEX = re.compile(r"[0-9a-fA-F]+")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")


class AuthorizationSyntaxError(ValueError):
    """The Authorization header is not `ALG Credential=.., SignedHeaders=.., Signature=..`."""


@dataclass(frozen=True)
class Authorization:
    algorithm: str
    serial: str  # the leaf serial in decimal, as sent (compared as an integer)
    date: str  # YYYYMMDD of the credential scope
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature_hex: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/{_TERMINATOR}"

    @property
    def signature(self) -> bytes:
        return bytes.fromhex(self.signature_hex)


def parse_authorization(value: str) -> Authorization:
    """Split an Authorization value; raises AuthorizationSyntaxError saying what is malformed."""
    algorithm, sep, rest = value.strip().partition(" ")
    if not sep or not algorithm:
        raise AuthorizationSyntaxError("no algorithm followed by parameters")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, eq, val = part.strip().partition("=")
        if not eq or key in fields:
            raise AuthorizationSyntaxError(f"malformed or repeated parameter {key!r}")
        fields[key] = val.strip()
    if set(fields) != {"Credential", "SignedHeaders", "Signature"}:
        raise AuthorizationSyntaxError(
            f"parameters are {sorted(fields)}, want Credential, SignedHeaders, Signature"
        )
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or scope[4] != _TERMINATOR:
        raise AuthorizationSyntaxError("Credential is not serial/date/region/service/aws4_request")
    serial, date, region, service, _ = scope
    if not serial.isdigit() or not (len(date) == 8 and date.isdigit()):
        raise AuthorizationSyntaxError("Credential serial or date is not decimal")
    signed = tuple(fields["SignedHeaders"].split(";"))
    if not all(_HEADER_NAME.fullmatch(h) for h in signed) or list(signed) != sorted(set(signed)):
        raise AuthorizationSyntaxError("SignedHeaders is not a sorted list of lowercase names")
    signature = fields["Signature"]
    if not _HEX.fullmatch(signature) or len(signature) % 2:
        raise AuthorizationSyntaxError("Signature is not hex")
    return Authorization(algorithm, serial, date, region, service, signed, signature.lower())


def _encode(text: str) -> str:
    # RFC 3986 unreserved characters stay, everything else is %XY (uppercase), space is %20.
    return quote(text, safe="-_.~")


def canonical_query(raw_query: str) -> str:
    """Canonical query string from the query as received (decoded, then re-encoded, sorted)."""
    pairs = []
    for item in raw_query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        # Decode first so that a client that encoded more (or less) than RFC 3986 asks still
        # matches: the canonical form is defined on the decoded values.
        pairs.append((_encode(unquote(name)), _encode(unquote(value))))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def canonical_headers(received: Iterable[tuple[str, str]], signed: Sequence[str]) -> str:
    """`name:value` lines for the signed headers, values trimmed, repeated headers joined by ','.

    Raises KeyError naming a signed header that was not received.
    """
    values: dict[str, list[str]] = {}
    for name, value in received:
        values.setdefault(name.strip().lower(), []).append(" ".join(value.split()))
    lines = []
    for name in signed:
        if name not in values:
            raise KeyError(name)
        lines.append(f"{name}:{','.join(values[name])}")
    return "\n".join(lines)


def canonical_request(
    method: str,
    path: str,
    raw_query: str,
    received_headers: Iterable[tuple[str, str]],
    signed_headers: Sequence[str],
    body: bytes,
) -> str:
    return "\n".join(
        [
            method.upper(),
            path or "/",
            canonical_query(raw_query),
            canonical_headers(received_headers, signed_headers) + "\n",
            ";".join(signed_headers),
            hashlib.sha256(body).hexdigest(),
        ]
    )


def string_to_sign(algorithm: str, amz_date: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return "\n".join([algorithm, amz_date, scope, digest])
