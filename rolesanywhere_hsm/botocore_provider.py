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
or the `secret_callback` given (asked at most once; a background refresh never prompts).
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from rolesanywhere_hsm.refresh import RefreshTimes, refresh_times
from rolesanywhere_hsm.session import CredentialSession, CredentialSpec, RememberedSecret
from rolesanywhere_hsm.spec import shown_in_message
from rolesanywhere_hsm.settings import ConfigError, options_for, settings_for

if TYPE_CHECKING:
    import boto3

__all__ = ["RolesAnywhereCredentialProvider", "boto3_session", "spec_from_options"]

METHOD = "rolesanywhere-hsm"
# Options of the command line that mean nothing in-process.
_NOT_IN_PROCESS = frozenset({"cache", "debug", "config-profile"})
# The windows botocore is given: markers our refresh_needed() recognises, not durations.
_ADVISORY_MARK, _MANDATORY_MARK = 2, 1


def spec_from_options(config_profile: str | None = None, environ: Mapping[str, str] | None = None,
                      **options: Any) -> CredentialSpec:
    """A `CredentialSpec` from the option table's names with underscores (`trust_anchor_arn=`),
    merged with the environment and the named profile as the command line would be."""
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
    settings = settings_for("credential-process", flags, environ)
    keywords = {opt.name: opt.attr for opt in options_for("credential-process")}

    def spell(name: str) -> str:
        """A keyword the caller passed is named as that keyword (`session_duration`); a value
        from the environment or a profile as the CLI names it."""
        if settings.origins.get(name) in ("flag", "default") and name in keywords:
            return keywords[name]
        return shown_in_message(settings, name)

    return CredentialSpec.from_settings(settings, spell)


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
                 pkcs8_password: str | None = None, clock: Callable[[], dt.datetime] | None = None,
                 rng: Callable[[], float] = random.random) -> None:
        self.spec = spec
        self._session = CredentialSession(spec, secret_callback=RememberedSecret(secret_callback),
                                          pkcs8_password=pkcs8_password)
        self._clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self._rng = rng
        self._times: RefreshTimes | None = None
        self._lock = threading.Lock()
        self._credentials: Any = None
        self.refresh_count = 0
        self._finalizer = weakref.finalize(self, self._session.close)

    def load(self) -> Any:
        with self._lock:
            if self._credentials is None:
                self._credentials = _RolesAnywhereCredentials.make(self._refresh, self._clock,
                                                                   lambda: self._times)
            return self._credentials

    def _refresh(self) -> dict[str, str]:
        """botocore's `refresh_using`: one CreateSession; the times for the next refresh."""
        issued_at = self._clock()
        credentials = self._session.fetch()
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
                  pkcs8_password: str | None = None, **options: Any) -> boto3.Session:
    """A `boto3.Session` whose credentials come from IAM Roles Anywhere with our signer.

    `config_profile` names a `[profiles.NAME]` of the config file (as `--config-profile` does);
    `options` are the command line's long names with underscores (`certificate=`,
    `private_key=`, `trust_anchor_arn=`, `profile_arn=`, `role_arn=`, `region=`, `endpoint=`,
    `pkcs11_lib=`, `session_duration=`, ...), taking precedence over the profile. `region_name`
    is the region of the AWS APIs you call (default: boto3's own, else the trust anchor's).
    Validation happens here; the token is first touched when credentials are first needed.
    """
    try:
        import boto3
        import botocore.session
    except ImportError:
        raise ConfigError("boto3 is not installed.",
                                 hint="pip install 'rolesanywhere-hsm[boto3]'.") from None
    spec = spec_from_options(config_profile, **options)
    provider = RolesAnywhereCredentialProvider(spec, secret_callback=secret_callback,
                                               pkcs8_password=pkcs8_password)
    core = botocore.session.Session()
    core.get_component("credential_provider").insert_before("env", provider)
    if region_name is None and core.get_config_variable("region") is None:
        region_name = spec.signing_region
    return boto3.Session(botocore_session=core, region_name=region_name)
