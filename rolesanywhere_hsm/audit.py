"""The audit log: one JSON object per line for every CreateSession attempt (docs/operations.md).

`--audit-log FILE` (RAH_AUDIT_LOG, profile key `audit-log`; `audit_log=` in Python) names the
file; `-` writes the lines to stderr. Each line is written with one `write()` on a descriptor
opened with O_APPEND, under an exclusive flock of the file, so that parallel
`credential-process` runs never interleave half lines. The file is created with mode 0600 if
missing (never through a symlink); an existing file keeps its mode and owner.

A line holds the time (RFC 3339, UTC), the outcome, our error code on failure, the certificate
(serial in hex, subject, issuer), where the key lives (a file path, or a pkcs11: URI with its
pin attributes removed, and the token's serial), the trust anchor, profile and role ARNs, the
role session name, the requested duration and, on success, the credentials' expiry and
AccessKeyId. Never the secret key, the session token or a PIN.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import sys

from rolesanywhere_hsm.attempts import Attempt
from rolesanywhere_hsm.errors import UsageError
from rolesanywhere_hsm.redact import redact

__all__ = ["AuditLog", "audit_record"]

STDERR = "-"
_UTC = dt.timezone.utc


def audit_record(attempt: Attempt) -> dict[str, object]:
    """The JSON object of one attempt (pure: tests check it on plain data)."""
    cert = attempt.certificate
    record: dict[str, object] = {
        "time": attempt.time.astimezone(_UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "event": "CreateSession",
        "outcome": attempt.outcome,
        "errorCode": attempt.error_code,
        "certificateSerial": cert.serial if cert else None,
        "certificateSubject": cert.subject if cert else None,
        "certificateIssuer": cert.issuer if cert else None,
        "key": redact(attempt.key) if attempt.key else None,
        "tokenSerial": attempt.token_serial,
        "trustAnchorArn": attempt.trust_anchor_arn,
        "profileArn": attempt.profile_arn,
        "roleArn": attempt.role_arn,
        "roleSessionName": attempt.role_session_name,
        "durationSeconds": attempt.duration_seconds,
        "seconds": round(attempt.seconds, 3),
    }
    if attempt.outcome == "success":
        record["expiration"] = (attempt.expiration.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                                if attempt.expiration else None)
        record["accessKeyId"] = attempt.access_key_id
    return record


class AuditLog:
    """An observer (rolesanywhere_hsm.attempts) appending one line per attempt to `target`."""

    def __init__(self, target: str) -> None:
        if not target:
            raise UsageError("--audit-log is empty; give a file, or - for stderr.")
        self.target = target
        if target != STDERR:
            self._open().close()  # at start: a path that cannot be written is a usage error now

    def __call__(self, event: object) -> None:
        if isinstance(event, Attempt):
            self.write(audit_record(event))

    def write(self, record: dict[str, object]) -> None:
        line = (json.dumps(record, separators=(",", ":"), ensure_ascii=True) + "\n").encode("ascii")
        if self.target == STDERR:
            sys.stderr.write(line.decode("ascii"))
            sys.stderr.flush()
            return
        import fcntl

        with self._open() as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                written = os.write(handle.fileno(), line)
                if written != len(line):  # a full disk: say so rather than leave half a line
                    raise OSError(errno.ENOSPC, "short write")
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _open(self):  # type: ignore[no-untyped-def]
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.target, flags, 0o600)
        except OSError as exc:
            reason = "it is a symbolic link" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
            raise UsageError(f"Cannot write the audit log {redact(self.target)}: {reason}.",
                             hint="Give a writable file with --audit-log (or - for stderr).") from None
        return os.fdopen(fd, "ab", buffering=0)

