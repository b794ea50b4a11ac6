"""The temporary credentials value and the formats our users' tools read it in.

Secrets are kept out of `repr()` so that a `--debug` traceback or a log line never carries
them; they leave this object only through the explicit output methods below.
Formats: docs/protocol.md sections 5 and 6.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rolesanywhere_hsm.errors import TransportError

__all__ = ["Credentials", "format_expiration", "parse_expiration"]


def parse_expiration(value: str) -> dt.datetime:
    """An ISO 8601 timestamp with a timezone (AWS writes `...Z`), as an aware UTC datetime."""
    when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no timezone")
    return when.astimezone(dt.timezone.utc)


def format_expiration(when: dt.datetime) -> str:
    """`2026-01-16T00:02:43Z`: the SDKs need the timezone, and `Z` is what AWS writes."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: dt.datetime
    role_arn: str | None = None
    assumed_role_arn: str | None = None
    source_identity: str | None = None

    @classmethod
    def from_create_session(cls, payload: Mapping[str, Any]) -> Credentials:
        """Read the 201 answer of CreateSession; a malformed one is a TransportError."""
        try:
            entry = payload["credentialSet"][0]
            creds = entry["credentials"]
            return cls(
                access_key_id=str(creds["accessKeyId"]),
                secret_access_key=str(creds["secretAccessKey"]),
                session_token=str(creds["sessionToken"]),
                expiration=parse_expiration(str(creds["expiration"])),
                role_arn=entry.get("roleArn"),
                assumed_role_arn=(entry.get("assumedRoleUser") or {}).get("arn"),
                source_identity=entry.get("sourceIdentity"),
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise TransportError(
                f"The CreateSession answer is not in the expected shape ({type(exc).__name__}: {exc}).",
                hint="Check that --endpoint points at Roles Anywhere.",
            ) from None

    def seconds_left(self, now: dt.datetime | None = None) -> float:
        now = now or dt.datetime.now(dt.timezone.utc)
        return (self.expiration - now).total_seconds()

    def credential_process_json(self) -> str:
        """The one JSON object `credential_process` prints (section 6), compact, no newline."""
        return json.dumps(
            {
                "Version": 1,
                "AccessKeyId": self.access_key_id,
                "SecretAccessKey": self.secret_access_key,
                "SessionToken": self.session_token,
                "Expiration": format_expiration(self.expiration),
            },
            separators=(",", ":"),
        )
