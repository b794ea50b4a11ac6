"""One credential source, described once (`CredentialSpec`) and kept open (`CredentialSession`).

A `CredentialSpec` (rolesanywhere_hsm.spec, re-exported here) is a frozen, pure value checked in
its constructor before any token is touched; it lives in its own light module so that a cache
hit of `credential-process` does not import this one.

A `CredentialSession` owns one signer and one `RolesAnywhereClient` for its whole life: the
signer is opened on the first `fetch()` (or by `open()`, which a long-running front end calls
at start so that the PIN is asked for in the main thread), so one token login serves hours of
refreshes. When the token loses the session (a pcscd restart, a dropped session handle), the
signer is closed and opened again, once per fetch. A PIN the token refused is never presented
again: `PinIncorrectError` and `PinLockedError` end the session for good.

How a secret is obtained is the front end's choice, given as a `SecretPolicy`
(signers/secretpolicy.py: one order for the PIN and the key passwords): the command line's
policy prompts on the terminal, from the main thread only; a session built without one (the
library: `create_session`, `boto3_session`) never prompts, and when no source answers says how
to give the secret (`secret_callback` still answers). A fetch from a background thread never
prompts. `RememberedSecret`, or a policy made with `remember=True`, lets a front end ask once
at start and answer later re-logins from memory.

A renewed certificate is picked up at the next fetch without a new login (rotation.py), and
each fetch is told to the session's observers as an `attempts.Attempt` (the audit log and the
metrics of the long-running front ends).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rolesanywhere_hsm.deadline import DEFAULT_TIMEOUT
from rolesanywhere_hsm.errors import (
    PinIncorrectError,
    PinLockedError,
    RolesAnywhereError,
    TokenError,
)
from rolesanywhere_hsm.lazylog import get_logger
from rolesanywhere_hsm.spec import DEFAULT_DURATION, CredentialSpec  # here too: the public API's historic home

if TYPE_CHECKING:
    from rolesanywhere_hsm.attempts import Observer
    from rolesanywhere_hsm.client import RetryPolicy, RolesAnywhereClient
    from rolesanywhere_hsm.rotation import RotationWatch
    from rolesanywhere_hsm.credentials import Credentials
    from rolesanywhere_hsm.signers.base import SecretCallback, Signer, SignerConfig
    from rolesanywhere_hsm.signers.secretpolicy import SecretPolicy

__all__ = ["CredentialSession", "CredentialSpec", "RememberedSecret", "create_session"]

log = get_logger("rolesanywhere_hsm.session")  # logging only when a line can show


class RememberedSecret:
    """A secret callback that asks once and answers from memory afterwards.

    For long-running front ends: call it (or `CredentialSession.open()`) in the main thread at
    start; a later re-login after the token dropped its session is then answered without a
    prompt. `forget()` drops the secret (the session calls it when the token refused it, so a
    refused PIN is never presented again).
    """

    def __init__(self, ask: Callable[[str], str] | None = None) -> None:
        self._ask = ask
        self._secret: str | None = None
        self._lock = threading.Lock()

    def __call__(self, description: str) -> str:
        with self._lock:
            if self._secret is None:
                if self._ask is not None:
                    self._secret = self._ask(description)
                else:  # made without a callback: the front end asked for the terminal
                    from rolesanywhere_hsm.signers.secretpolicy import terminal_prompt

                    self._secret = terminal_prompt(description)
            return self._secret

    def forget(self) -> None:
        with self._lock:
            self._secret = None

    def __repr__(self) -> str:
        return f"RememberedSecret(held={self._secret is not None})"


class CredentialSession:
    """One open signer and one client for one `CredentialSpec`; `fetch()` gets credentials.

    Thread-safe: fetches are serialised (a token signs one request at a time). `signer` lends
    an already open signer, which the session uses but does not close (for
    `client.create_session(Signer, ...)`). `secret_policy` is how secrets may be found
    (default: `SecretPolicy.unattended()`, which never prompts), with `secret_callback` added.
    """

    def __init__(
        self,
        spec: CredentialSpec,
        *,
        secret_callback: SecretCallback | None = None,
        pkcs8_password: str | None = None,
        signer: Signer | None = None,
        retry: RetryPolicy | None = None,
        tpm_key_password: str | None = None,
        observers: Sequence[Observer] = (),
        rotate: bool = False,
        secret_policy: SecretPolicy | None = None,
    ) -> None:
        from rolesanywhere_hsm.signers.secretpolicy import SecretPolicy

        self.spec = spec
        self._policy = (secret_policy or SecretPolicy.unattended()).with_callback(secret_callback)
        self.observers = list(observers)
        self._rotate = rotate  # long-running front ends: pick up a renewed certificate
        self._watch: RotationWatch | None = None
        self._callback = secret_callback
        self._pkcs8_password = pkcs8_password
        self._tpm_key_password = tpm_key_password
        self._signer: Signer | None = signer
        self._owns_signer = signer is None
        self._retry = retry
        self._client: RolesAnywhereClient | None = None
        self._lock = threading.RLock()
        self._fatal: PinIncorrectError | PinLockedError | None = None
        self._closed = False
        self.open_count = 0  # signers opened: 1 for a healthy session, for diagnostics and tests
        self.fetch_count = 0
        self._earlier_logins = 0  # re-logins of signers closed since

    def open(self) -> CredentialSession:
        """Open the signer (log in) and the client now, in the calling thread, instead of on
        the first fetch: a front end calls this at start so that a prompt happens there."""
        with self._lock:
            self._check_open()
            self._open_client()
            self._open_signer()
        return self

    def fetch(self) -> Credentials:
        """One CreateSession with the session's signer. A token that lost its session is
        reopened once; a refused PIN ends the session (raised again on every later fetch)."""
        if not self.observers:
            return self._fetch()
        started, clock = dt.datetime.now(dt.timezone.utc), time.monotonic()
        try:
            credentials = self._fetch()
        except RolesAnywhereError as exc:
            self._tell(started, time.monotonic() - clock, None, exc)
            raise
        self._tell(started, time.monotonic() - clock, credentials, None)
        return credentials

    @property
    def login_count(self) -> int:
        """Key store logins so far (opens, and re-logins after the token dropped a session)."""
        signer = self._signer
        relogins = max(0, getattr(signer, "login_count", 1) - 1) if signer is not None else 0
        return self.open_count + self._earlier_logins + relogins

    def _tell(self, started: dt.datetime, seconds: float, credentials: Credentials | None,
              error: RolesAnywhereError | None) -> None:
        from rolesanywhere_hsm.attempts import Attempt, certificate_summary, notify
        from rolesanywhere_hsm.errors import ThrottlingError

        signer = self._signer
        summary = None
        if signer is not None:
            try:
                summary = certificate_summary(signer.certificate)
            except RolesAnywhereError:
                summary = None
        spec = self.spec
        notify(self.observers, Attempt(
            time=started, seconds=seconds, outcome="failure" if error else "success",
            error_code=error.code if error else None, certificate=summary,
            key=spec.private_key or spec.certificate,
            token_serial=getattr(signer, "token_serial", None) or None,
            trust_anchor_arn=spec.trust_anchor_arn, profile_arn=spec.profile_arn, role_arn=spec.role_arn,
            role_session_name=spec.role_session_name, duration_seconds=spec.duration_seconds,
            expiration=credentials.expiration if credentials else None,
            access_key_id=credentials.access_key_id if credentials else None,
            throttled=isinstance(error, ThrottlingError),
        ))

    def _fetch(self) -> Credentials:
        with self._lock:
            self._check_open()
            client = self._open_client()
            for attempt in (1, 2):
                fresh = self._signer is None
                signer = self._open_signer()
                if not fresh and self._watch is not None:
                    signer = self._rotated(signer)
                try:
                    credentials = client.create_session(
                        signer,
                        self.spec.arns,
                        duration_seconds=self.spec.duration_seconds,
                        role_session_name=self.spec.role_session_name,
                    )
                except (PinIncorrectError, PinLockedError) as exc:
                    self._fail_for_good(exc)
                    raise
                except TokenError as exc:
                    if attempt == 2 or fresh or not self._owns_signer:
                        raise
                    log.warning("the token failed (%s); opening it again once", exc.message)
                    self._close_signer()
                    continue
                self.fetch_count += 1
                return credentials
            raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close the signer (log out) and the client; idempotent."""
        with self._lock:
            self._closed = True
            self._close_signer()
            if self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> CredentialSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"CredentialSession(role={self.spec.role_arn!r}, open={self._signer is not None}, "
                f"closed={self._closed})")

    # -- internals ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._fatal is not None:
            raise type(self._fatal)(
                f"This credential session stopped after the token refused a PIN: {self._fatal.message}",
                hint="Fix the PIN source and start again; a refused PIN is not presented again.",
            )
        if self._closed:
            raise TokenError("The credential session is closed.", hint="Open a new session.")

    def _open_client(self) -> RolesAnywhereClient:
        if self._client is None:
            from rolesanywhere_hsm.client import RetryPolicy, RolesAnywhereClient

            self._client = RolesAnywhereClient(
                self.spec.signing_region,
                endpoint=self.spec.endpoint,
                verify=self.spec.verify,
                trust_env=self.spec.trust_env,
                retry=self._retry or RetryPolicy(),
                timeout=self.spec.timeout or DEFAULT_TIMEOUT,  # the budget of each fetch
            )
        return self._client

    def _open_signer(self) -> Signer:
        if self._signer is None:
            try:
                self._signer = self._load_signer()
            except (PinIncorrectError, PinLockedError) as exc:
                self._fail_for_good(exc)
                raise
            self.open_count += 1
            if self._rotate and self._owns_signer:
                self._watch_rotation()
        return self._signer

    def _load_signer(self) -> Signer:
        from rolesanywhere_hsm.signers.base import load_signer

        config = self.spec.signer_config(self._callback, pkcs8_password=self._pkcs8_password,
                                         tpm_key_password=self._tpm_key_password)
        return load_signer(config, self._policy)

    def _watch_rotation(self) -> None:
        if self._watch is not None:
            self._watch.restamp()
            return
        from rolesanywhere_hsm.attempts import notify
        from rolesanywhere_hsm.rotation import RotationWatch
        from rolesanywhere_hsm.signers.base import signer_kind

        spec = self.spec
        key_in_file = signer_kind(spec.signer_config(None)) == "file"
        self._watch = RotationWatch(spec.certificate, spec.private_key, spec.intermediates,
                                    key_in_file=key_in_file, reopen=self._load_signer,
                                    notify=lambda event: notify(self.observers, event))

    def _rotated(self, signer: Signer) -> Signer:
        """The signer after a renewed certificate was applied (the same, or a new one for a
        key in a file: the old one is closed)."""
        assert self._watch is not None
        current = self._watch.check(signer)
        if current is not signer:
            self._close_signer()
            self._signer = current
        return current

    def _fail_for_good(self, exc: PinIncorrectError | PinLockedError) -> None:
        self._fatal = exc
        if isinstance(self._callback, RememberedSecret):
            self._callback.forget()
        self._policy.forget()
        self._close_signer()

    def _close_signer(self) -> None:
        signer, self._signer = self._signer, None
        if signer is not None:
            self._earlier_logins += max(0, getattr(signer, "login_count", 1) - 1)
        if signer is not None and self._owns_signer:
            try:
                signer.close()
            except Exception as exc:  # noqa: BLE001 (closing a broken token must not mask the cause)
                log.debug("closing the signer failed: %s", type(exc).__name__)


def create_session(
    signer: Signer | SignerConfig,
    *,
    trust_anchor_arn: str,
    profile_arn: str,
    role_arn: str,
    region: str | None = None,
    endpoint: str | None = None,
    duration_seconds: int = DEFAULT_DURATION,
    role_session_name: str | None = None,
    verify: bool | str = True,
    trust_env: bool = True,
    retry: RetryPolicy | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    secret_policy: SecretPolicy | None = None,
) -> Credentials:
    """Get credentials once: a `CredentialSession` used for one fetch and closed.

    Secrets come from `secret_policy` (default: every source but a prompt; the config's
    `secret_callback` answers before one), so a library call never prompts unless asked to.

    Every argument is checked (by `CredentialSpec`) before the key store is opened, so a typo
    in an ARN never costs a PIN entry. Given an open Signer, it is used and left open.
    `timeout` is the budget of the call to the service (all attempts), counted from when the
    signer is open: a PIN prompt does not eat into it. `retry` defaults to `RetryPolicy()`.
    """
    from rolesanywhere_hsm.client import RetryPolicy
    from rolesanywhere_hsm.keysource import KeySource
    from rolesanywhere_hsm.signers.base import SignerConfig

    lent = None if isinstance(signer, SignerConfig) else signer
    config = signer if isinstance(signer, SignerConfig) else None
    key = KeySource.from_config(config) if config else KeySource("(an open signer)")
    spec = CredentialSpec(
        **key.fields(),
        trust_anchor_arn=trust_anchor_arn,
        profile_arn=profile_arn,
        role_arn=role_arn,
        region=region,
        endpoint=endpoint,
        duration_seconds=duration_seconds,
        role_session_name=role_session_name,
        verify=verify,
        trust_env=trust_env,
        timeout=timeout,
    )
    with CredentialSession(
        spec,
        secret_callback=config.secret_callback if config else None,
        pkcs8_password=config.pkcs8_password if config else None,
        tpm_key_password=config.tpm_key_password if config else None,
        signer=lent,
        retry=retry if retry is not None else RetryPolicy(),
        secret_policy=secret_policy,
    ) as session:
        return session.fetch()
