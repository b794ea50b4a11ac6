"""boto3 and botocore in-process: credentials signed on the token, refreshed as our rule says.

`boto3_session(config_profile=None, **options)` returns a `boto3.Session` whose credentials come
from IAM Roles Anywhere; `RolesAnywhereCredentialProvider` is the botocore credential provider
behind it, for those who build their own sessions (insert it into the session's resolver with
`session.get_component("credential_provider").insert_before("env", provider)`).

Only botocore's public extension points are used: a `CredentialProvider` whose `load()` returns
`RefreshableCredentials`, and that class's `refresh_needed()`. botocore's own windows are fixed
(refresh 15 minutes before expiry, block at 10), so a 900-second session would be refreshed on
every call; ours answer `refresh_needed()` from `refresh.refresh_times()` for each credential set
(scaled to its real lifetime, with jitter), and botocore keeps doing what it does well: one
refresh at a time under its lock, the old credentials kept when an advisory refresh fails, callers
blocked only in the mandatory window.

One `CredentialSession` serves the provider for the life of the process: one token login, one
signature and one CreateSession per refresh. Nothing happens until credentials are first needed
(creating the session asks for no PIN). A PIN comes from the URI's pin-source, RAH_PKCS11_PIN,
or the `secret_callback` given (asked at most once); nothing prompts unless the caller passes a
`secret_policy` that does (`SecretPolicy.terminal()`), and a background refresh never prompts.

While the token or the endpoint is down, botocore asks for a refresh on every call; the provider
backs off (`refresh.backoff_delay`: full jitter from one second, capped at a tenth of the
lifetime and at a minute) and answers calls inside the backoff with the last error at once,
without touching the token or the network. A PIN the token refused is never presented again
(the session refuses every later fetch by itself).
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from rolesanywhere_hsm.errors import CredentialsUnavailableError, PinError, RolesAnywhereError
from rolesanywhere_hsm.refresh import BACKOFF_CAP, RefreshTimes, backoff_delay, refresh_times
from rolesanywhere_hsm.session import CredentialSession, CredentialSpec
from rolesanywhere_hsm.settings import ConfigError, Settings, options_for, settings_for
from rolesanywhere_hsm.spec import shown_in_message

if TYPE_CHECKING:
    import boto3

    from rolesanywhere_hsm.signers.secretpolicy import SecretPolicy

__all__ = ["RolesAnywhereCredentialProvider", "boto3_session", "spec_from_options"]

METHOD = "rolesanywhere-hsm"
# Options of the command line that mean nothing in-process.
_NOT_IN_PROCESS = frozenset({"cache", "debug", "config-profile"})
# The windows botocore is given: markers our refresh_needed() recognises, not durations.
_ADVISORY_MARK, _MANDATORY_MARK = 2, 1


# Options that are secrets: a CredentialSpec never holds one, so `spec_from_options` refuses
# them rather than drop them; boto3_session() takes them as its own keywords.
_SECRET_OPTIONS = {"tpm_key_password": "tpm-key-password", "pkcs8_password": "pkcs8-password"}


def spec_from_options(config_profile: str | None = None, environ: Mapping[str, str] | None = None,
                      **options: Any) -> CredentialSpec:
    """A `CredentialSpec` from the option table's names with underscores (`trust_anchor_arn=`),
    merged with the environment and the named profile as the command line would be. Secret
    options (`tpm_key_password`, `pkcs8_password`) are refused: a spec holds no secret, and
    dropping them silently would leave the key locked (give them to `boto3_session`)."""
    secret = sorted(set(options) & set(_SECRET_OPTIONS))
    if secret:
        raise ConfigError(
            f"{', '.join(secret)} is a secret, which a CredentialSpec never holds.",
            hint="Pass it to boto3_session() or RolesAnywhereCredentialProvider() as a keyword.")
    return _spec(_settings_from_options(config_profile, environ, **options))


def _spec(settings: Settings) -> CredentialSpec:
    """The spec, with an error about one setting named as the Python caller gave it: a keyword
    it passed as that keyword (`session_duration`), a value from the environment or a profile
    as the command line names it (`RAH_SESSION_DURATION:`, `... in profile 'p' of F:`)."""
    keywords = {opt.name: opt.attr for opt in options_for("credential-process")}

    def spell(name: str) -> str:
        if settings.origins.get(name) in ("flag", "default") and name in keywords:
            return keywords[name]
        return shown_in_message(settings, name)

    return CredentialSpec.from_settings(settings, spell)


def _settings_from_options(config_profile: str | None, environ: Mapping[str, str] | None,
                           **options: Any) -> Any:
    allowed = {opt.attr: opt.name for opt in options_for("credential-process")
               if opt.name not in _NOT_IN_PROCESS}
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"Unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}.",
            hint=f"Use the long option names with underscores: {', '.join(sorted(allowed))}.",
        )
    flags = {allowed[key]: value for key, value in options.items() if value is not None}
    if config_profile:
        flags["config-profile"] = config_profile
    return settings_for("credential-process", flags, environ)


class _RolesAnywhereCredentials:
    """Builds the botocore credentials object lazily, so this module imports without botocore."""

    @staticmethod
    def make(refresh: Callable[[], dict[str, str]], clock: Callable[[], dt.datetime],
             times: Callable[[], RefreshTimes | None]) -> Any:
        from botocore.credentials import RefreshableCredentials

        class RolesAnywhereCredentials(RefreshableCredentials):  # type: ignore[misc]
            """Deferred (nothing fetched until first use), with windows from our rule."""

            def __init__(self) -> None:
                super().__init__(None, None, None, None, refresh, METHOD, clock,
                                 advisory_timeout=_ADVISORY_MARK, mandatory_timeout=_MANDATORY_MARK)

            def refresh_needed(self, refresh_in: float | None = None) -> bool:
                current = times()
                if current is None:  # nothing fetched yet
                    return True
                now = clock()
                if refresh_in is None or refresh_in == _ADVISORY_MARK:
                    return now >= current.advisory
                if refresh_in == _MANDATORY_MARK:
                    return now >= current.mandatory
                if refresh_in == 0:  # botocore's "is it expired?"
                    return now >= current.usable_until
                return bool(super().refresh_needed(refresh_in))

        return RolesAnywhereCredentials()


class RolesAnywhereCredentialProvider:
    """A botocore credential provider (duck-typed: botocore's resolver calls `load()` and reads
    `METHOD`) over one `CredentialSession`.

    `load()` returns the same credentials object every time: one session, one token login, for
    the life of the provider. `close()` logs out; it also happens when the provider is garbage
    collected or at interpreter exit.
    """

    METHOD = METHOD
    CANONICAL_NAME = "RolesAnywhereHsm"

    def __init__(self, spec: CredentialSpec, *, secret_callback: Callable[[str], str] | None = None,
                 pkcs8_password: str | None = None, tpm_key_password: str | None = None,
                 clock: Callable[[], dt.datetime] | None = None,
                 rng: Callable[[], float] = random.random,
                 monotonic: Callable[[], float] = time.monotonic,
                 audit_log: str | None = None, secret_policy: SecretPolicy | None = None) -> None:
        from rolesanywhere_hsm.signers.secretpolicy import SecretPolicy

        self.spec = spec
        observers = []
        if audit_log:
            from rolesanywhere_hsm.audit import AuditLog

            observers.append(AuditLog(audit_log))
        # rotate: a renewed certificate is used at the next refresh (rotation.py), no new login.
        # One answer from the callback (or a prompt the caller allowed) serves every re-login.
        policy = (secret_policy or SecretPolicy.unattended()).with_callback(secret_callback).remembering()
        self._session = CredentialSession(spec, secret_policy=policy, pkcs8_password=pkcs8_password,
                                          tpm_key_password=tpm_key_password, observers=observers,
                                          rotate=True)
        self._clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self._rng = rng
        self._monotonic = monotonic
        self._failures = 0
        self._retry_at: float | None = None  # monotonic: no fetch before this after a failure
        self._last_error: RolesAnywhereError | None = None
        self._times: RefreshTimes | None = None
        self._lock = threading.Lock()
        self._credentials: Any = None
        self.refresh_count = 0
        self.failure_count = 0  # fetches that failed (not the calls answered inside a backoff)
        self._finalizer = weakref.finalize(self, self._session.close)

    def load(self) -> Any:
        with self._lock:
            if self._credentials is None:
                self._credentials = _RolesAnywhereCredentials.make(self._refresh, self._clock,
                                                                   lambda: self._times)
            return self._credentials

    def _refresh(self) -> dict[str, str]:
        """botocore's `refresh_using`: one CreateSession, or, inside the backoff after a failed
        one, the last error again at once; the times for the next refresh."""
        if self._retry_at is not None and self._monotonic() < self._retry_at:
            left = self._retry_at - self._monotonic()
            error = self._last_error
            raise CredentialsUnavailableError(
                f"Not fetching credentials for {left:.1f} s more: the last attempt failed: "
                f"{error.message if error else 'unknown error'}",
                hint="Refreshing is retried with backoff; check the endpoint and the token.",
            ) from error
        issued_at = self._clock()
        try:
            credentials = self._session.fetch()
        except RolesAnywhereError as exc:
            self.failure_count += 1
            if isinstance(exc, PinError):
                # A refused PIN is never presented again: the session answers it from memory at
                # once, without the token. No backoff to wait out, and callers keep seeing the
                # PIN error itself (what to fix), not "not fetching for N s".
                raise
            self._failures += 1
            cap = min(self._times.backoff_cap, BACKOFF_CAP) if self._times else BACKOFF_CAP
            self._retry_at = self._monotonic() + backoff_delay(self._failures, cap, self._rng())
            self._last_error = exc
            raise
        self._failures, self._retry_at, self._last_error = 0, None, None
        self._times = refresh_times(issued_at, credentials.expiration, jitter=self._rng())
        self.refresh_count += 1
        return {
            "access_key": credentials.access_key_id,
            "secret_key": credentials.secret_access_key,
            "token": credentials.session_token,
            "expiry_time": credentials.expiration.isoformat(),
        }

    def close(self) -> None:
        self._finalizer()


def boto3_session(config_profile: str | None = None, *, region_name: str | None = None,
                  secret_callback: Callable[[str], str] | None = None,
                  pkcs8_password: str | None = None, tpm_key_password: str | None = None,
                  secret_policy: SecretPolicy | None = None, **options: Any) -> boto3.Session:
    """A `boto3.Session` whose credentials come from IAM Roles Anywhere with our signer.

    `config_profile` names a `[profiles.NAME]` of the config file (as `--config-profile` does);
    `options` are the command line's long names with underscores (`certificate=`,
    `private_key=`, `trust_anchor_arn=`, `profile_arn=`, `role_arn=`, `region=`, `endpoint=`,
    `pkcs11_lib=`, `session_duration=`, `audit_log=` (a file, or "-" for stderr: one JSON line per
    CreateSession attempt), ...), taking precedence over the profile. `region_name`
    is the region of the AWS APIs you call (default: boto3's own, else the trust anchor's).
    `pkcs8_password` and `tpm_key_password` unlock an encrypted key file and a TPM key file
    (else RAH_PKCS8_PASSWORD / RAH_TPM_KEY_PASSWORD, else `secret_callback`). Nothing prompts
    unless `secret_policy` allows it (`SecretPolicy.terminal()`); when no source answers, the
    error says how to give the secret.
    Validation happens here; the token is first touched when credentials are first needed.
    """
    try:
        import boto3
        import botocore.session
    except ImportError:
        raise ConfigError("boto3 is not installed.",
                                 hint="pip install boto3 (what the [boto3] extra installs).") from None
    for name, value in (("pkcs8_password", pkcs8_password), ("tpm_key_password", tpm_key_password)):
        if value is not None:
            options[name] = value  # resolved with the environment, as the command line's are
    settings = _settings_from_options(config_profile, None, **options)
    spec = _spec(settings)
    provider = RolesAnywhereCredentialProvider(spec, secret_callback=secret_callback,
                                               pkcs8_password=settings["pkcs8-password"],
                                               tpm_key_password=settings["tpm-key-password"],
                                               audit_log=settings["audit-log"],
                                               secret_policy=secret_policy)
    core = botocore.session.Session()
    core.get_component("credential_provider").insert_before("env", provider)
    if region_name is None and core.get_config_variable("region") is None:
        region_name = spec.signing_region
    return boto3.Session(botocore_session=core, region_name=region_name)
