"""The AWS shared credentials file: where it is, and writing one profile's keys into it.

Every AWS SDK reads `aws_access_key_id`, `aws_secret_access_key` and `aws_session_token` from
the profile's section of `~/.aws/credentials`, or of the file `AWS_SHARED_CREDENTIALS_FILE`
names. We change those three keys of one section and nothing else (inifile.py), under a lock
and with an atomic rename (files.py), and the file is owner-only (0600) afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from rolesanywhere_hsm.credentials import Credentials
from rolesanywhere_hsm.files import update_atomic
from rolesanywhere_hsm.inifile import set_section_values

__all__ = ["shared_credentials_path", "write_profile"]


def shared_credentials_path(environ: Mapping[str, str] | None = None) -> Path:
    """`AWS_SHARED_CREDENTIALS_FILE` (with `~` and variables expanded, as botocore does), else
    `~/.aws/credentials`."""
    env = os.environ if environ is None else environ
    configured = env.get("AWS_SHARED_CREDENTIALS_FILE")
    if configured:
        return Path(os.path.expanduser(os.path.expandvars(configured)))
    return Path(os.path.expanduser("~")) / ".aws" / "credentials"


def write_profile(path: str | Path, profile: str, credentials: Credentials) -> Path:
    """Set the profile's three credential keys in `path` (created if missing); returns the
    file actually written (the target of a symbolic link)."""
    values = {
        "aws_access_key_id": credentials.access_key_id,
        "aws_secret_access_key": credentials.secret_access_key,
        "aws_session_token": credentials.session_token,
    }

    def change(old: bytes | None) -> bytes:
        text = "" if old is None else old.decode("utf-8", "surrogateescape")
        return set_section_values(text, profile, values).encode("utf-8", "surrogateescape")

    # A directory, a FIFO, a device, a planted link: refused by update_atomic, naming the file.
    return update_atomic(Path(path), change, mode=0o600, what="credentials")
