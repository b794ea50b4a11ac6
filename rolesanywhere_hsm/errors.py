"""The one exception tree of rolesanywhere-hsm, and the exit codes the CLI maps it to.

Every error carries a message written for a person (what is wrong, what to do) apart from its
class, so the CLI can print one line without a traceback. No message may contain a PIN, a
secret key or a session token: messages are built from names and counts, never from values.

    RolesAnywhereError                  exit 1   (base; unexpected internal errors also exit 1)
    ├── UsageError                      exit 2   bad options or input files
    │   ├── ArnError                             malformed or mismatched ARNs
    │   ├── EndpointError                        no endpoint for a region, or a bad override
    │   └── Pkcs11UriError                       a malformed pkcs11: URI
    ├── CertificateError                exit 3   a certificate or chain cannot be used
    ├── KeyLoadError                    exit 3   a key file cannot be read or does not match
    ├── TokenError                      exit 4   the PKCS#11 module, token or object
    │   ├── ModuleLoadError                      the module cannot be found or loaded
    │   ├── SelectionError                       no, or more than one, token or object matches
    │   └── TokenSigningError                    the token refused or failed to sign
    ├── PinError                        exit 5   a PIN was needed and could not be used
    │   ├── PinUnavailableError                  no source and no terminal to prompt on
    │   ├── PinIncorrectError                    the token said the PIN is wrong (tried once)
    │   └── PinLockedError                       the token's PIN is blocked
    ├── ServiceError                    exit 6   Roles Anywhere (or the emulator) said no
    │   ├── AccessDeniedError                    403 AccessDeniedException
    │   ├── ValidationError                      400 ValidationException
    │   ├── ResourceNotFoundError                404 ResourceNotFoundException
    │   └── ThrottlingError                      429 ThrottlingException (after retries)
    └── TransportError                  exit 7   connection, TLS, timeout, proxy, bad response
        └── CredentialsUnavailableError          no valid credentials now (refreshes failing)
"""

from __future__ import annotations

__all__ = [
    "AccessDeniedError",
    "ArnError",
    "CertificateError",
    "CredentialsUnavailableError",
    "EndpointError",
    "KeyLoadError",
    "ModuleLoadError",
    "PinError",
    "PinIncorrectError",
    "PinLockedError",
    "PinUnavailableError",
    "Pkcs11UriError",
    "ResourceNotFoundError",
    "RolesAnywhereError",
    "SelectionError",
    "ServiceError",
    "ThrottlingError",
    "TokenError",
    "TokenSigningError",
    "TransportError",
    "UsageError",
    "ValidationError",
    "service_error",
]


class RolesAnywhereError(Exception):
    """Base of every error we raise on purpose.

    `message` says what is wrong; `hint` (optional) says what to do. `diagnostics()` joins
    them into the one or two lines the CLI prints.
    """

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def diagnostics(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class UsageError(RolesAnywhereError):
    exit_code = 2


class ArnError(UsageError):
    pass


class EndpointError(UsageError):
    pass


class Pkcs11UriError(UsageError):
    pass


class CertificateError(RolesAnywhereError):
    exit_code = 3


class KeyLoadError(RolesAnywhereError):
    exit_code = 3


class TokenError(RolesAnywhereError):
    exit_code = 4


class ModuleLoadError(TokenError):
    pass


class SelectionError(TokenError):
    pass


class TokenSigningError(TokenError):
    pass


class PinError(RolesAnywhereError):
    exit_code = 5


class PinUnavailableError(PinError):
    pass


class PinIncorrectError(PinError):
    pass


class PinLockedError(PinError):
    pass


class ServiceError(RolesAnywhereError):
    """The service answered with an error. `error_type` and `status` are the service's own."""

    exit_code = 6

    def __init__(
        self, message: str, *, error_type: str, status: int, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.error_type = error_type
        self.status = status


class AccessDeniedError(ServiceError):
    pass


class ValidationError(ServiceError):
    pass


class ResourceNotFoundError(ServiceError):
    pass


class ThrottlingError(ServiceError):
    pass


class TransportError(RolesAnywhereError):
    exit_code = 7


class CredentialsUnavailableError(TransportError):
    """A long-lived credential source holds no valid credentials now: the first fetch has not
    finished, or refreshes keep failing and the last good credentials have expired. The cause
    (the failed refresh's error) is in `__cause__` and in the message."""


_SERVICE_ERRORS: dict[str, type[ServiceError]] = {
    "AccessDeniedException": AccessDeniedError,
    "ValidationException": ValidationError,
    "ResourceNotFoundException": ResourceNotFoundError,
    "ThrottlingException": ThrottlingError,
}

_SERVICE_HINTS: dict[type[ServiceError], str] = {
    AccessDeniedError: "Check that the certificate chains to the trust anchor, that the role is "
    "in the profile, and that the machine's clock is right.",
    ValidationError: "Check the ARNs and --session-duration (900..43200 seconds).",
    ResourceNotFoundError: "Check --trust-anchor-arn and --profile-arn, and the region.",
    ThrottlingError: "Too many CreateSession calls; use a cache or wait and try again.",
}


def service_error(error_type: str, status: int, message: str) -> ServiceError:
    """Build the exception for an error answer, keeping the service's type and message."""
    cls = _SERVICE_ERRORS.get(error_type, ServiceError)
    text = f"Roles Anywhere refused the request: {error_type or 'HTTP ' + str(status)}: {message}"
    return cls(text, error_type=error_type, status=status, hint=_SERVICE_HINTS.get(cls))
