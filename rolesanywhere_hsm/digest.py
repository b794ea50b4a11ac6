"""`sha256` for naming things (the cache key, an entry's file name) without loading OpenSSL.

`hashlib` loads `_hashlib`, OpenSSL's libcrypto, at import: a few milliseconds that a cache hit,
which hashes a few hundred bytes, should not pay. CPython's own SHA-256 (`_sha2` since 3.12,
`_sha256` before) computes the same digest; `hashlib` is the fallback where neither is built.
"""

from __future__ import annotations

__all__ = ["sha256_hex"]

try:
    from _sha2 import sha256 as _sha256  # type: ignore[import-not-found]  # Python >= 3.12
except ImportError:
    try:
        from _sha256 import sha256 as _sha256  # type: ignore[import-not-found,no-redef]  # 3.11
    except ImportError:
        from hashlib import sha256 as _sha256  # type: ignore[assignment]


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of `data`, as 64 lower-case hex digits."""
    return _sha256(data).hexdigest()
