"""RFC 7512 `pkcs11:` URIs for the token fixtures' objects.

Written here rather than borrowed from rolesanywhere_hsm.signers.pkcs11_uri on purpose: the
fixtures hand URIs to the code under test, and a parser checked against URIs its own printer
made would prove little.
"""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["pkcs11_uri"]


def pkcs11_uri(path: dict[str, str | bytes | None], query: dict[str, str | None] | None = None) -> str:
    """`pkcs11:` + path attributes (`id` as bytes, fully percent-encoded) + query attributes.

    Everything but RFC 3986 unreserved characters is percent-encoded, which every RFC 7512
    parser must accept ("YubiKey PIV #1" -> "YubiKey%20PIV%20%231").
    """
    parts = []
    for name, value in path.items():
        if value is None:
            continue
        if isinstance(value, bytes):
            parts.append(f"{name}=" + "".join(f"%{b:02x}" for b in value))
        else:
            parts.append(f"{name}={quote(value, safe='')}")
    uri = "pkcs11:" + ";".join(parts)
    queries = [f"{k}={quote(v, safe='/:')}" for k, v in (query or {}).items() if v is not None]
    return uri + ("?" + "&".join(queries) if queries else "")
