"""The one exception tree of rolesanywhere-hsm, and the exit codes the CLI maps it to.

Every error carries a message written for a person (what is wrong, what to do) apart from its
class, so the CLI can print one line without a traceback. No message may contain a PIN, a
secret key or a session token: messages are built from names and counts, never from values.

Each class has a stable `code` (RAH-AREA-NNN) that the CLI shows with --debug and that
docs/errors.md explains (cause and fix); a raising site may pass `code=` where one class
covers clearly different situations. tests/test_error_catalogue.py keeps the codes used here and
the catalogue equal, so a code cannot drift or go undocumented.

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
    │   └── ThrottlingError             exit 9   429 ThrottlingException (after backing off)
    └── TransportError                  exit 7   connection, TLS, timeout, proxy, bad response
        ├── TlsVerificationError                 the server's certificate did not verify
        ├── AnswerTooLargeError                  the answer was too large to be Roles Anywhere
        ├── CredentialsUnavailableError          no valid credentials now (refreshes failing)
        └── DeadlineExceededError                the time budget (--timeout) ran out
    AttestationError                    exit 10  (under RolesAnywhereError) attestation refused
    ├── AttestationUnavailableError              the key cannot be attested (imported, module)
    ├── AttestationChainError                    not signed, or not chaining to the roots
    ├── AttestationKeyMismatchError              the attested key is not the request's key
    └── AttestationPolicyError                   attested, but not as the policy requires

(`doctor` reports failures as checks, not exceptions, and exits 8 when one failed.)
"""

from __future__ import annotations

from rolesanywhere_hsm.redact import redact

__all__ = [
    "SETTING",
    "AccessDeniedError",
    "AnswerTooLargeError",
    "ArnError",
    "AttestationChainError",
    "AttestationError",
    "AttestationKeyMismatchError",
    "AttestationPolicyError",
    "AttestationUnavailableError",
    "CertificateError",
    "CredentialsUnavailableError",
    "DeadlineExceededError",
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
    "TlsVerificationError",
    "TokenError",
    "TokenSigningError",
    "TransportError",
    "UsageError",
    "ValidationError",
    "service_error",
]


# Where a message names the setting it is about (`setting=`), it writes this token; each front
# end renders it as its user gave it (`name_setting`).
SETTING = "{setting}"


class RolesAnywhereError(Exception):
    """Base of every error we raise on purpose.

    `message` says what is wrong; `hint` (optional) says what to do. `diagnostics()` joins
    them into the one or two lines the CLI prints.

    An error about one setting carries its name from the option table (`setting=
    "session-duration"`) and writes `{setting}` where the name goes; the front end that took the
    value names it as its user gave it (`name_setting`): the CLI the flag or environment
    variable, a profile its key and file, `boto3_session` the keyword. Until then the message
    shows the option table's name.

    `retryable` belongs to the class: whether the same call may succeed if made again
    (a dropped connection may; a refused certificate will not).
    """

    exit_code: int = 1
    code: str = "RAH-GEN-001"
    retryable: bool = False

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None,
                 setting: str | None = None) -> None:
        # The safety net for "no secret in a message": whatever user input a raising site
        # quoted, a pin-value, an unknown pin-source, URL user-info and control characters
        # are gone before the text can reach stderr, a log or a traceback (redact.py).
        message = redact(message)
        hint = None if hint is None else redact(hint)
        self._templates = (message, hint)
        self.setting = setting
        self.hint = hint
        self.message = message
        super().__init__(message)
        if setting is not None:
            self.name_setting(setting)
        if code is not None:  # a per-raise override of the class's code (see docs/errors.md)
            self.code = code

    def name_setting(self, shown: str) -> None:
        """Show the setting this error is about as `shown` (`--session-duration`,
        `RAH_SESSION_DURATION`, `session_duration`, `session-duration in profile 'p' of F`)."""
        message, hint = self._templates
        self.message = message.replace(SETTING, shown)
        self.hint = None if hint is None else hint.replace(SETTING, shown)
        self.args = (self.message,)

    def diagnostics(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class UsageError(RolesAnywhereError):
    code = "RAH-USE-001"
    exit_code = 2


class ArnError(UsageError):
    code = "RAH-ARN-001"


class EndpointError(UsageError):
    code = "RAH-EP-001"


class Pkcs11UriError(UsageError):
    code = "RAH-URI-001"


class CertificateError(RolesAnywhereError):
    code = "RAH-CERT-001"
    exit_code = 3


class KeyLoadError(RolesAnywhereError):
    code = "RAH-KEY-001"
    exit_code = 3


class TokenError(RolesAnywhereError):
    code = "RAH-TOK-001"
    exit_code = 4


class ModuleLoadError(TokenError):
    code = "RAH-MOD-001"


class SelectionError(TokenError):
    code = "RAH-SEL-001"


class TokenSigningError(TokenError):
    code = "RAH-SIGN-001"


class PinError(RolesAnywhereError):
    code = "RAH-PIN-001"
    exit_code = 5


class PinUnavailableError(PinError):
    code = "RAH-PIN-002"


class PinIncorrectError(PinError):
    code = "RAH-PIN-003"


class PinLockedError(PinError):
    code = "RAH-PIN-004"


class ServiceError(RolesAnywhereError):
    """The service answered with an error. `error_type` and `status` are the service's own."""

    code = "RAH-SVC-001"
    exit_code = 6

    def __init__(
        self, message: str, *, error_type: str, status: int, hint: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, code=code)
        self.error_type = error_type
        self.status = status


class AccessDeniedError(ServiceError):
    code = "RAH-SVC-002"


class ValidationError(ServiceError):
    code = "RAH-SVC-003"


class ResourceNotFoundError(ServiceError):
    code = "RAH-SVC-004"


class ThrottlingError(ServiceError):
    """The service throttled the account (10 CreateSession/s per account and region) and was
    still doing so after the backoff: not a refusal of who we are, so its own exit code, which
    a wrapper can retry on later while it must not retry an access denial."""

    code = "RAH-SVC-005"
    exit_code = 9


class TransportError(RolesAnywhereError):
    code = "RAH-NET-001"
    exit_code = 7
    retryable = True  # a dropped connection, a reset: another attempt may get through


class TlsVerificationError(TransportError):
    """The server's certificate did not verify: the same certificate fails the same way."""

    code = "RAH-TLS-001"
    retryable = False


class AnswerTooLargeError(TransportError):
    """The answer exceeded MAX_ANSWER_BYTES: not Roles Anywhere, and not read."""

    code = "RAH-ANS-001"
    retryable = False


class CredentialsUnavailableError(TransportError):
    """A long-lived credential source holds no valid credentials now: the first fetch has not
    finished, or refreshes keep failing and the last good credentials have expired. The cause
    (the failed refresh's error) is in `__cause__` and in the message."""

    code = "RAH-NET-002"


class DeadlineExceededError(TransportError):
    """The time budget of the call ran out; the message names the phase it ran out in."""

    code = "RAH-NET-003"
    retryable = False  # there is no time left for another attempt


_SERVICE_ERRORS: dict[str, type[ServiceError]] = {
    "AccessDeniedException": AccessDeniedError,
    "ValidationException": ValidationError,
    "ResourceNotFoundException": ResourceNotFoundError,
    "ThrottlingException": ThrottlingError,
}

_SERVICE_HINTS: dict[type[ServiceError], str] = {
    AccessDeniedError: "Check that the certificate chains to the trust anchor, that the role is "
    "in the profile, and that the machine's clock is right: `rolesanywhere-hsm doctor` with the "
    "same options checks each.",
    ValidationError: "Check the ARNs and --session-duration (900..43200 seconds); "
    "`rolesanywhere-hsm doctor` with the same options checks them.",
    ResourceNotFoundError: "Check --trust-anchor-arn and --profile-arn, and the region; "
    "`rolesanywhere-hsm doctor` with the same options checks them.",
    ThrottlingError: "Too many CreateSession calls for this account and region; use --cache, "
    "serve or update so that one session serves many calls, or wait and try again.",
}


def service_error(error_type: str, status: int, message: str) -> ServiceError:
    """Build the exception for an error answer, keeping the service's type and message."""
    cls = _SERVICE_ERRORS.get(error_type) or (ThrottlingError if status == 429 else ServiceError)
    text = f"Roles Anywhere refused the request: {error_type or 'HTTP ' + str(status)}: {message}"
    return cls(text, error_type=error_type, status=status, hint=_SERVICE_HINTS.get(cls))


class AttestationError(RolesAnywhereError):
    """A key's attestation is missing or refused (attest, csr --attest, verify-attestation).

    `reason` is a short stable word for policy engines (`verify-attestation --json`)."""

    code = "RAH-ATT-001"
    exit_code = 10
    reason = "refused"


class AttestationUnavailableError(AttestationError):
    code = "RAH-ATT-002"
    reason = "unavailable"


class AttestationChainError(AttestationError):
    code = "RAH-ATT-003"
    reason = "chain"


class AttestationKeyMismatchError(AttestationError):
    code = "RAH-ATT-004"
    reason = "key-mismatch"


class AttestationPolicyError(AttestationError):
    code = "RAH-ATT-005"
    reason = "policy"
