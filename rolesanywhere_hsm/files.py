"""Writing files so that nothing is lost and nothing leaks: atomically, owner-only by default.

A reader (an SDK, a watcher polling for a port file) sees the old file or the new one, never a
half-written one; a secret is never readable by others, not even for a moment.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: str | Path, text: str, mode: int = 0o600) -> Path:
    """Replace `path` with `text` in one rename, the new file created with `mode`."""
    path = Path(path).absolute()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w") as handle:
            if mode != 0o600:
                os.fchmod(handle.fileno(), mode)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
