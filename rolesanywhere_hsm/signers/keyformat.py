"""Which kind of key file a path holds, sniffed from its first bytes.

Its own module so that the signer registry (`signers.base`) can pick the TPM key signer without
importing it (nor tpm2-pytss), and so that the sniff, like every read of a file the user names,
goes through `files.read_regular_file`: a FIFO, a device or a huge file is refused at once
instead of blocking `credential-process` before its time budget even starts.
"""

from __future__ import annotations

import os

from rolesanywhere_hsm.errors import KeyLoadError, RolesAnywhereError
from rolesanywhere_hsm.files import KEY_LIMIT, read_regular_file

__all__ = ["TSS2_PEM_BEGIN", "is_tss2_key_file"]

TSS2_PEM_BEGIN = b"-----BEGIN TSS2 PRIVATE KEY-----"
# A TSS2 PEM key is under 2 KiB (RSA-4096: public 0.5 KiB, private 0.3 KiB, base64): its
# marker, if any, is within this much of the start (after comments or blank lines).
_SNIFF_BYTES = 8192


def is_tss2_key_file(path: str | os.PathLike[str]) -> bool:
    """True when `path` is a regular file whose first bytes hold a TSS2 PEM key.

    Called on every file key to pick the signer, so it never raises: a file that cannot be
    read (missing, a FIFO, too large) is left to the file signer, whose own bounded read says
    why in one line.
    """
    try:
        data = read_regular_file(path, what="private key", limit=KEY_LIMIT, error=KeyLoadError)
    except RolesAnywhereError:
        return False
    return TSS2_PEM_BEGIN in data[:_SNIFF_BYTES]
