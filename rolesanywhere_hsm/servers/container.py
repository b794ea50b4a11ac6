"""The container-credentials endpoint (ECS and EKS style) the AWS SDKs read through
`AWS_CONTAINER_CREDENTIALS_FULL_URI` and `AWS_CONTAINER_AUTHORIZATION_TOKEN` (or
`AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`).

The SDK sends the token as the whole `Authorization` header; it is compared in constant time.
The token is made at start (`generate_token`) or read from a file the user names
(`read_token_file`), so that a supervisor can hand the same one to the workloads.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path

from rolesanywhere_hsm.errors import UsageError
from rolesanywhere_hsm.httpserver import Request, Response
from rolesanywhere_hsm.redact import redact
from rolesanywhere_hsm.servers.snapshot import SnapshotAnswer, SnapshotCache

__all__ = ["CONTAINER_PATH", "ContainerApp", "generate_token", "read_token_file"]

CONTAINER_PATH = "/container/credentials"
MAX_TOKEN_FILE = 1024
MIN_TOKEN_LENGTH = 16
_JSON = ("Content-Type", "application/json")
_UNAUTHORIZED = Response(401, b'{"message":"Missing or wrong Authorization token"}', [_JSON], close=True)
_UNAVAILABLE = Response(503, b'{"message":"No valid credentials now; the server is retrying."}', [_JSON],
                        authorized=True)


def generate_token() -> str:
    """A fresh token: 32 random bytes, URL-safe base64 (what goes into an HTTP header as is)."""
    return secrets.token_urlsafe(32)


def _valid_token_text(token: str) -> bool:
    return len(token) >= MIN_TOKEN_LENGTH and token.isascii() and token.isprintable() and " " not in token


def read_token_file(path: str | Path) -> str:
    """The token in `path`: a regular file of at most 1 KiB holding the token and nothing else,
    that others cannot read.

    Nothing else, not even a final newline: the SDKs send the file's content as it is, and
    botocore refuses a token with a line break on every fetch ("Auth token value is not a legal
    header value"), so a file that only `serve` could use is refused here, with the way to
    write it. Others must not read it because the token *is* the credential (whoever sends it
    gets the keys), unlike a PIN file (docs/security.md); its group may, since the workloads
    that send it have to read the same file.
    """
    import os
    import stat

    from rolesanywhere_hsm.files import read_regular_file

    shown = redact(str(path))
    data = read_regular_file(path, what="container token", limit=MAX_TOKEN_FILE)
    token = data.decode("ascii", "replace")
    if token != token.strip():
        where = "ends with a newline" if token.endswith("\n") else "has whitespace around the token"
        raise UsageError(
            f"the container token file {shown} {where}: the AWS SDKs send the file as it is and "
            "refuse a line break. Write the token alone, e.g. "
            f"openssl rand -hex 32 | tr -d '\\n' > {shown}"
        )
    if not _valid_token_text(token):
        raise UsageError(
            f"the container token in {shown} must be at least {MIN_TOKEN_LENGTH} printable ASCII "
            "characters without spaces"
        )
    try:
        mode = os.stat(path).st_mode
    except OSError:  # gone since it was read: nothing to judge
        mode = 0
    if mode & stat.S_IROTH:
        raise UsageError(
            f"the container token file {shown} can be read by others (mode {stat.S_IMODE(mode):04o}): "
            f"whoever has the token gets the credentials. Run chmod o-r {shown} (its group may "
            "read it, to share it with the workloads)"
        )
    return token


class ContainerApp:
    """GET `CONTAINER_PATH` with the token as `Authorization` -> the credentials document."""

    def __init__(self, snapshots: SnapshotCache, token: str, *, path: str = CONTAINER_PATH) -> None:
        if not _valid_token_text(token):
            raise ValueError("the container token must be at least 16 printable ASCII characters")
        self._snapshots = snapshots
        self._token = token.encode()
        self.path = path
        self._answer = SnapshotAnswer(lambda snapshot: snapshot.container_document, [_JSON])

    def __call__(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"", [("Allow", "GET, HEAD")])
        given = request.single_header("authorization")
        if given is None or not hmac.compare_digest(given.encode("latin-1", "replace"), self._token):
            # Closed: a client without the token has no reason to hold a connection.
            return _UNAUTHORIZED
        snapshot = self._snapshots.get()
        if snapshot is None:
            return _UNAVAILABLE
        return self._answer(snapshot)
