"""The temporary credentials value and the formats our users' tools read it in.

Secrets are kept out of `repr()` so that a `--debug` traceback or a log line never carries
them; they leave this object only through the explicit output methods below.
Formats: docs/protocol.md sections 5 and 6.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping

from rolesanywhere_hsm.errors import TransportError
from rolesanywhere_hsm.record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a cache hit
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Credentials", "format_expiration", "parse_expiration"]


def parse_expiration(value: str) -> dt.datetime:
    """An ISO 8601 timestamp with a timezone (AWS writes `...Z`), as an aware UTC datetime."""
    when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no timezone")
    return when.astimezone(dt.timezone.utc)


def _unusable(reason: str, *, clock_hint: bool = False) -> TransportError:
    return TransportError(
        f"The service answered with unusable credentials: {reason}.",
        hint="Check this machine's clock and time zone." if clock_hint
        else "Check that --endpoint points at Roles Anywhere.",
    )


def _optional_text(value: object) -> str | None:
    """An informational field (role ARN, source identity): kept when it is a string."""
    return value if isinstance(value, str) else None


def format_expiration(when: dt.datetime) -> str:
    """`2026-01-16T00:02:43Z`: the SDKs need the timezone, and `Z` is what AWS writes."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Credentials(Record):
    """One set of temporary credentials; `repr()` leaves the secret key and the token out. A
    plain frozen class (rolesanywhere_hsm.record): a cache hit builds one."""

    _compared = ("access_key_id", "secret_access_key", "session_token", "expiration", "role_arn",
                 "assumed_role_arn", "source_identity")
    _shown = ("access_key_id", "expiration", "role_arn", "assumed_role_arn", "source_identity")
    __slots__ = _compared

    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: dt.datetime
    role_arn: str | None
    assumed_role_arn: str | None
    source_identity: str | None

    def __init__(self, access_key_id: str, secret_access_key: str, session_token: str,
                 expiration: dt.datetime, role_arn: str | None = None,
                 assumed_role_arn: str | None = None, source_identity: str | None = None) -> None:
        self._set(access_key_id=access_key_id, secret_access_key=secret_access_key,
                  session_token=session_token, expiration=expiration, role_arn=role_arn,
                  assumed_role_arn=assumed_role_arn, source_identity=source_identity)

    @classmethod
    def from_create_session(
        cls, payload: Mapping[str, Any], *, now: dt.datetime | None = None
    ) -> Credentials:
        """Read the 201 answer of CreateSession, checked before anything uses it.

        Every credential field must be a non-empty string and the expiration a timestamp with a
        timezone that is still in the future (at `now`, default the current time): printing
        expired or mistyped credentials would make the SDK fail later with an error that points
        nowhere near the cause. Anything else is a TransportError (exit 7) whose message names
        the field, never its value.
        """
        try:
            entry = payload["credentialSet"][0]
            creds = entry["credentials"]
        except (KeyError, IndexError, TypeError):
            raise _unusable("the answer has no credentialSet[0].credentials") from None
        if not isinstance(entry, Mapping) or not isinstance(creds, Mapping):
            raise _unusable("credentialSet[0].credentials is not an object")
        fields = {}
        for name in ("accessKeyId", "secretAccessKey", "sessionToken", "expiration"):
            value = creds.get(name)
            if value is None:
                raise _unusable(f"{name} is missing")
            if not isinstance(value, str):
                raise _unusable(f"{name} is not a string ({type(value).__name__})")
            if not value.strip():
                raise _unusable(f"{name} is empty")
            fields[name] = value
        try:
            expiration = parse_expiration(fields["expiration"])
        except ValueError:
            raise _unusable("expiration is not a timestamp with a timezone") from None
        now = now or dt.datetime.now(dt.timezone.utc)
        if expiration <= now:
            raise _unusable(f"they expired at {format_expiration(expiration)}", clock_hint=True)
        assumed = entry.get("assumedRoleUser")
        return cls(
            access_key_id=fields["accessKeyId"],
            secret_access_key=fields["secretAccessKey"],
            session_token=fields["sessionToken"],
            expiration=expiration,
            role_arn=_optional_text(entry.get("roleArn")),
            assumed_role_arn=_optional_text(assumed.get("arn")) if isinstance(assumed, Mapping) else None,
            source_identity=_optional_text(entry.get("sourceIdentity")),
        )

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
