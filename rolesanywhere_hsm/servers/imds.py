"""IMDSv2, as the AWS SDKs use it to get an instance role's credentials.

    PUT /latest/api/token            X-aws-ec2-metadata-token-ttl-seconds: 1..21600 -> a token
    GET /latest/meta-data/iam/security-credentials/         -> the role name
    GET /latest/meta-data/iam/security-credentials/{role}   -> the credentials document

Every GET needs a valid, unexpired token in `X-aws-ec2-metadata-token` (401 otherwise: this is
IMDSv2 only). A request carrying `X-Forwarded-For` has passed through a proxy and is refused
with 400, as EC2 does: together with the answers' IP TTL (`--hop-limit`), that keeps the
credentials from being fetched through something that relays requests.

Tokens are stateless: the expiry and an HMAC of it under a key made at start. However many
clients ask, memory does not grow, and checking one costs a hash.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import time
from collections.abc import Callable

from rolesanywhere_hsm.httpserver import Request, Response
from rolesanywhere_hsm.servers.snapshot import SnapshotAnswer, SnapshotCache

__all__ = ["CREDENTIALS_PATH", "MAX_TOKEN_TTL", "TOKEN_PATH", "ImdsApp", "ImdsTokens", "role_name_of"]

TOKEN_PATH = "/latest/api/token"
CREDENTIALS_PATH = "/latest/meta-data/iam/security-credentials/"
TTL_HEADER = "x-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "x-aws-ec2-metadata-token"
MAX_TOKEN_TTL = 21600

_TEXT = ("Content-Type", "text/plain")
_JSON = ("Content-Type", "application/json")
_UNAUTHORIZED = Response(401, b"", [_TEXT], close=True)
_UNAVAILABLE = Response(503, b'{"Code":"CredentialsUnavailable","Message":"No valid credentials now; '
                        b'the server is retrying."}', [_JSON], authorized=True)
_NO_SUCH_PATH = Response(404, b"", [_TEXT], authorized=True)


def role_name_of(role_arn: str) -> str:
    """`arn:aws:iam::123456789012:role/path/name` -> `name` (what EC2 lists for the role)."""
    return role_arn.rsplit("/", 1)[-1] or "role"


class ImdsTokens:
    """Session tokens: `<expiry in ms, hex>.<HMAC-SHA256 of it, base64url>`, checked in constant time."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, key: bytes | None = None) -> None:
        self._clock = clock
        self._key = key or secrets.token_bytes(32)
        self._checked: dict[str, int] = {}  # tokens whose MAC was verified -> expiry

    def _mac(self, payload: bytes) -> bytes:
        return base64.urlsafe_b64encode(hmac.digest(self._key, payload, "sha256")).rstrip(b"=")

    def issue(self, ttl_seconds: int) -> str:
        payload = b"%x" % int((self._clock() + ttl_seconds) * 1000)
        return (payload + b"." + self._mac(payload)).decode()

    def valid(self, token: str | None) -> bool:
        if not token or len(token) > 128:
            return False
        expires_ms = self._checked.get(token)
        if expires_ms is None:
            payload, dot, mac = token.encode("latin-1", "replace").partition(b".")
            if not dot or not hmac.compare_digest(mac, self._mac(payload)):
                return False
            try:
                expires_ms = int(payload, 16)
            except ValueError:
                return False
            if len(self._checked) >= 1024:  # a client keeps its token for hours: remember a few
                self._checked.clear()
            self._checked[token] = expires_ms
        return self._clock() * 1000 < expires_ms


def _ttl(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit() or not value.strip().isascii() or len(value.strip()) > 6:
        return None
    ttl = int(value)
    return ttl if 1 <= ttl <= MAX_TOKEN_TTL else None


class ImdsApp:
    """The IMDSv2 paths; `__call__(request)` answers them (other paths: 404)."""

    def __init__(self, snapshots: SnapshotCache, role_name: str, *, tokens: ImdsTokens | None = None) -> None:
        self._snapshots = snapshots
        self.role_name = role_name
        self._tokens = tokens or ImdsTokens()
        self._listing = Response(200, role_name.encode(), [_TEXT], authorized=True)
        self._role_path = CREDENTIALS_PATH + role_name
        self._answer = SnapshotAnswer(lambda snapshot: snapshot.imds_document, [_TEXT])

    def __call__(self, request: Request) -> Response:
        if request.header("x-forwarded-for") is not None:
            return Response(400, b"Forwarded requests are refused\n", [_TEXT])
        path = request.path
        if path == TOKEN_PATH:
            if request.method != "PUT":
                return Response(405, b"", [("Allow", "PUT")])
            ttl = _ttl(request.header(TTL_HEADER))
            if ttl is None:
                return Response(400, b"X-aws-ec2-metadata-token-ttl-seconds must be 1..21600\n", [_TEXT])
            return Response(200, self._tokens.issue(ttl).encode(), [_TEXT, (TTL_HEADER, str(ttl))])
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"", [("Allow", "GET, HEAD")])
        if not self._tokens.valid(request.single_header(TOKEN_HEADER)):
            return _UNAUTHORIZED  # closed: the SDK asks for a new token, on a new connection if need be
        # A valid token: this client is an SDK (authorized: its connection is kept at the bound).
        if path == self._role_path:
            snapshot = self._snapshots.get()
            if snapshot is None:
                return _UNAVAILABLE
            return self._answer(snapshot)
        if path == CREDENTIALS_PATH or path == CREDENTIALS_PATH[:-1]:
            return self._listing
        return _NO_SUCH_PATH
