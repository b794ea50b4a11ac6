"""The refusals the emulator answers with, shaped like the service's own (docs/protocol.md section 5).

The verification code raises `Rejection`; the HTTP front turns it into a status, an
`X-Amzn-ErrorType` header and a `{"message": ...}` body. The `message` is what AWS would say
(short and vague on purpose, as the real service is); `detail` says which check fired, for the
request log, the `X-Rah-Emulator-Detail` header and the tests, which must tell apart the many
reasons that all read "Invalid signature".
"""

from __future__ import annotations

__all__ = [
    "ACCESS_DENIED",
    "INVALID_SIGNATURE",
    "NOT_FOUND",
    "Rejection",
    "SESSION_NAME_NOT_AUTHORIZED",
    "THROTTLING",
    "UNTRUSTED_CERTIFICATE",
    "VALIDATION",
    "access_denied",
    "invalid_signature",
    "not_found",
    "unable_to_assume",
    "untrusted_certificate",
    "validation",
]

ACCESS_DENIED = "AccessDeniedException"
VALIDATION = "ValidationException"
NOT_FOUND = "ResourceNotFoundException"
THROTTLING = "ThrottlingException"

INVALID_SIGNATURE = "Invalid signature"
UNTRUSTED_CERTIFICATE = "Untrusted signing certificate"
SESSION_NAME_NOT_AUTHORIZED = "Not authorized to set roleSessionName."


class Rejection(Exception):
    """A request the emulator refuses: what the client is told, and why (for the log)."""

    def __init__(self, status: int, error_type: str, message: str, detail: str) -> None:
        super().__init__(f"{status} {error_type}: {message} ({detail})")
        self.status = status
        self.error_type = error_type
        self.message = message
        self.detail = detail


def invalid_signature(detail: str) -> Rejection:
    return Rejection(403, ACCESS_DENIED, INVALID_SIGNATURE, detail)


def untrusted_certificate(detail: str) -> Rejection:
    return Rejection(403, ACCESS_DENIED, UNTRUSTED_CERTIFICATE, detail)


def access_denied(message: str, detail: str) -> Rejection:
    return Rejection(403, ACCESS_DENIED, message, detail)


def unable_to_assume(role_arn: str, detail: str) -> Rejection:
    return Rejection(403, ACCESS_DENIED, f"Unable to assume role for {role_arn}", detail)


def validation(message: str, detail: str | None = None) -> Rejection:
    return Rejection(400, VALIDATION, message, detail or message)


def not_found(message: str, detail: str | None = None) -> Rejection:
    return Rejection(404, NOT_FOUND, message, detail or message)
