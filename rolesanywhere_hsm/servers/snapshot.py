"""The current credentials as the documents the servers send, built once per credential set.

Credential GETs are the hot path of `serve` (tens of thousands a second): the JSON documents
are serialised once when the source hands out a new `Credentials` object and reused until the
next one, and each request only checks that the set has not expired.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from rolesanywhere_hsm.credentials import Credentials, format_expiration
from rolesanywhere_hsm.errors import RolesAnywhereError
from rolesanywhere_hsm.httpserver import Response

__all__ = ["CredentialSource", "Snapshot", "SnapshotAnswer", "SnapshotCache"]

log = logging.getLogger("rolesanywhere_hsm.servers")


class CredentialSource(Protocol):
    def current(self) -> Credentials:
        """Valid credentials now, or raise CredentialsUnavailableError (a RolesAnywhereError)."""
        ...


@dataclass(frozen=True, slots=True)
class Snapshot:
    imds_document: bytes  # Code, LastUpdated, Type, AccessKeyId, SecretAccessKey, Token, Expiration
    container_document: bytes  # AccessKeyId, SecretAccessKey, Token, Expiration
    expires_at: float  # POSIX seconds
    expiration: str


def _usable(credentials: Credentials) -> bool:
    return all(
        isinstance(value, str) and value
        for value in (credentials.access_key_id, credentials.secret_access_key, credentials.session_token)
    )


class SnapshotCache:
    """`get()`: the documents for the source's current credentials, or None when there are none
    (the source raised, or handed out something empty or expired: refused here too, so that a
    bug upstream can never become a 200 with unusable credentials)."""

    def __init__(self, source: CredentialSource, *, wall_clock: Callable[[], float] = time.time) -> None:
        self._source = source
        self._clock = wall_clock
        self._credentials: Credentials | None = None
        self._snapshot: Snapshot | None = None
        self.last_error: str | None = None

    def get(self) -> Snapshot | None:
        try:
            credentials = self._source.current()
        except RolesAnywhereError as exc:
            self.last_error = exc.message
            return None
        now = self._clock()
        snapshot = self._snapshot
        if credentials is not self._credentials or snapshot is None:
            if not _usable(credentials):
                log.error("the credential source returned empty credentials; answering 503")
                return None
            snapshot = self._build(credentials, now)
            self._credentials, self._snapshot = credentials, snapshot
        if snapshot.expires_at <= now:
            return None
        return snapshot

    @staticmethod
    def _build(credentials: Credentials, now: float) -> Snapshot:
        expiration = format_expiration(credentials.expiration)
        common = {
            "AccessKeyId": credentials.access_key_id,
            "SecretAccessKey": credentials.secret_access_key,
            "Token": credentials.session_token,
            "Expiration": expiration,
        }
        imds = {
            "Code": "Success",
            "LastUpdated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "Type": "AWS-HMAC",
            **common,
        }
        return Snapshot(
            json.dumps(imds, indent=2).encode(),
            json.dumps(common).encode(),
            credentials.expiration.timestamp(),
            expiration,
        )


class SnapshotAnswer:
    """The 200 answer to a credential GET: one `Response` per credential set, the same object
    until the set changes, so that the HTTP layer reuses its serialised bytes (and may answer a
    repeated request from them). `document` picks the snapshot's document."""

    def __init__(self, document: Callable[[Snapshot], bytes], headers: list[tuple[str, str]]) -> None:
        self._document = document
        self._headers = headers
        self._answered: tuple[Snapshot | None, Response | None] = (None, None)  # swapped whole

    def __call__(self, snapshot: Snapshot) -> Response:
        answered, response = self._answered
        if answered is not snapshot or response is None:
            response = Response(200, self._document(snapshot), self._headers, authorized=True)
            self._answered = (snapshot, response)
        return response
