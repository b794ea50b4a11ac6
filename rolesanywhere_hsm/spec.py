"""What a credential source is (`CredentialSpec`), checked and named without anything heavy.

A `CredentialSpec` is a frozen, pure value: the ARNs, region, endpoint, duration, role session
name, the key and certificate references (no secrets: a `pin-value` in a URI never reaches the
cache key), and the TLS and proxy settings. All validation happens in its constructor, once,
before any token is touched, so that a typo costs a clear message and not a PIN entry.
`cache_key()` names the source from its text (and the identity of the files it names) without
loading a PKCS#11 module, by the rule in rolesanywhere_hsm.cachekey.

It lives apart from the session layer (rolesanywhere_hsm.session, which re-exports it) because
`credential-process` validates a source before anything heavy: importing it costs re and our
ARN and error modules, never threading, the signers or httpx. A cache hit does not import it at
all (it computes the same key from the settings: rolesanywhere_hsm.cachekey says why that is sound).
"""

from __future__ import annotations

import re

from rolesanywhere_hsm.arn import SessionArns, validate_session_arns
from rolesanywhere_hsm.cachekey import cache_key, spec_fields, tls_verify
from rolesanywhere_hsm.errors import SETTING, ArnError, UsageError
from rolesanywhere_hsm.keysource import KEY_FIELDS, KeySource
from rolesanywhere_hsm.record import Record
from rolesanywhere_hsm.redact import redact

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from rolesanywhere_hsm.settings import Settings
    from rolesanywhere_hsm.signers.base import SecretCallback, SignerConfig

__all__ = ["DEFAULT_DURATION", "MAX_DURATION", "MIN_DURATION", "CredentialSpec", "shown_in_message",
           "tls_verify"]

# docs/protocol.md section 2; the client takes its bounds from here.
MIN_DURATION, MAX_DURATION = 900, 43200
DEFAULT_DURATION = 3600
# AssumeRole's RoleSessionName: 2..64 of [\w+=,.@-].
_ROLE_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)


def shown_in_message(settings: Settings, name: str) -> str:
    """How an error message starts when it is about option `name`: the flag as typed
    (`--session-duration 100 is ...`), or where the value came from followed by a colon
    (`RAH_SESSION_DURATION: 100 is ...`, `session-duration in profile 'dev' of F: 100 is ...`)."""
    spelled = settings.spelled(name)
    return f"{spelled}:" if settings.origins.get(name) in ("env", "profile") else spelled


def _field_name(setting: str) -> str:
    """The CredentialSpec keyword of an option-table setting (for errors of a spec built
    directly, e.g. by `create_session`)."""
    return {"session-duration": "duration_seconds"}.get(setting, setting.replace("-", "_"))


class CredentialSpec(Record):
    """Everything that decides which credentials a fetch gets; no secrets.

    `verify` is True (system CAs), False (no verification) or a CA bundle path; `trust_env`
    honours HTTPS_PROXY and friends; `timeout` is the total seconds one fetch may take
    (None: the client's defaults). `arns` and `key_source` are derived (the ARNs checked; the
    key's settings as one `KeySource`, its --cert-selector parsed). A plain frozen class, not a dataclass: a cache hit builds one
    (rolesanywhere_hsm.record says why).
    """

    _compared = (
        "certificate", "trust_anchor_arn", "profile_arn", "role_arn", "private_key", "intermediates",
        "pkcs11_lib", "reuse_pin", "region", "endpoint", "duration_seconds", "role_session_name",
        "verify", "trust_env", "timeout", "no_tpm_key_password", "cert_selector",
        "use_latest_expiring_certificate", "token_chain",
    )
    __slots__ = (*_compared, "arns", "key_source")

    certificate: str | None  # None: --cert-selector picks it among the tokens' certificates
    trust_anchor_arn: str
    profile_arn: str
    role_arn: str
    private_key: str | None
    intermediates: str | None
    pkcs11_lib: str | None
    reuse_pin: bool
    region: str | None
    endpoint: str | None
    duration_seconds: int
    role_session_name: str | None
    verify: bool | str
    trust_env: bool
    timeout: float | None
    no_tpm_key_password: bool
    cert_selector: Any  # the official helper's --cert-selector text (or a parsed one)
    use_latest_expiring_certificate: bool
    token_chain: bool  # a certificate on a token: send its issuer path from the token
    arns: SessionArns
    key_source: KeySource  # the key's settings, built once (cert_selector parsed there)

    def __init__(
        self, certificate: str | None, trust_anchor_arn: str, profile_arn: str, role_arn: str,
        private_key: str | None = None, intermediates: str | None = None, pkcs11_lib: str | None = None,
        reuse_pin: bool = False, region: str | None = None, endpoint: str | None = None,
        duration_seconds: int = DEFAULT_DURATION, role_session_name: str | None = None,
        verify: bool | str = True, trust_env: bool = True, timeout: float | None = None,
        no_tpm_key_password: bool = False, cert_selector: Any = None,
        use_latest_expiring_certificate: bool = False, token_chain: bool = True,
    ) -> None:
        self._set(
            certificate=certificate, trust_anchor_arn=trust_anchor_arn, profile_arn=profile_arn,
            role_arn=role_arn, private_key=private_key, intermediates=intermediates,
            pkcs11_lib=pkcs11_lib, reuse_pin=reuse_pin, region=region, endpoint=endpoint,
            duration_seconds=duration_seconds, role_session_name=role_session_name, verify=verify,
            trust_env=trust_env, timeout=timeout, no_tpm_key_password=no_tpm_key_password,
            cert_selector=cert_selector, use_latest_expiring_certificate=use_latest_expiring_certificate,
            token_chain=token_chain,
        )
        try:
            self._check()
        except UsageError as exc:  # built directly (create_session): name the keyword
            if exc.setting is not None:
                exc.name_setting(_field_name(exc.setting))
            raise

    def _check(self) -> None:
        if not self.certificate and not self.cert_selector:
            raise UsageError("No certificate was given.",
                             hint="Pass --certificate (a file or a pkcs11: URI) or --cert-selector.")
        arns = validate_session_arns(self.trust_anchor_arn, self.profile_arn, self.role_arn)
        if self.region and self.region != arns.region:
            raise ArnError(
                f"{SETTING} {redact(self.region)} does not match the trust anchor's region {arns.region}.",
                hint=f"Roles Anywhere signs in the trust anchor's region; drop {SETTING} or fix it.",
                setting="region",
            )
        if isinstance(self.duration_seconds, bool) or not isinstance(self.duration_seconds, int) or not (
            MIN_DURATION <= self.duration_seconds <= MAX_DURATION
        ):
            raise UsageError(
                f"{SETTING} {self.duration_seconds} is out of range.",
                hint=f"Use {MIN_DURATION}..{MAX_DURATION} seconds.", setting="session-duration",
            )
        if self.role_session_name is not None and not _ROLE_SESSION_NAME.fullmatch(self.role_session_name):
            raise UsageError(
                f"{SETTING} {redact(self.role_session_name)!r} is not a valid role session name.",
                hint="Use 2 to 64 characters: letters, digits and + = , . @ _ -.",
                setting="role-session-name",
            )
        if self.timeout is not None:
            from rolesanywhere_hsm.deadline import check_timeout

            check_timeout(self.timeout)
        object.__setattr__(self, "arns", arns)
        # its own checks (a selector that does not parse, or with a key file and no
        # certificate), now: errors name the setting as the ones above do
        object.__setattr__(self, "key_source", KeySource(**{name: getattr(self, name) for name in KEY_FIELDS}))

    @classmethod
    def from_settings(cls, settings: Settings,
                      spell: Callable[[str], str] | None = None) -> CredentialSpec:
        """The source that resolved options describe (rolesanywhere_hsm.settings): what the
        CLI commands, profiles and `boto3_session()` all go through. An error about one
        setting names it as `spell(name)` does (default `shown_in_message`: the flag, the
        environment variable, or the profile key and its file)."""
        try:
            return cls(**spec_fields(settings))
        except UsageError as exc:
            if exc.setting is not None and exc.setting in settings.origins:
                exc.name_setting(spell(exc.setting) if spell else shown_in_message(settings, exc.setting))
            raise

    @property
    def signing_region(self) -> str:
        """The region requests are signed for: always the trust anchor's."""
        return self.arns.region

    @property
    def selector(self) -> Any:
        """The --cert-selector, parsed (None without one)."""
        return self.key_source.selector

    def signer_config(
        self, secret_callback: SecretCallback | None = None, *, pkcs8_password: str | None = None,
        tpm_key_password: str | None = None,
    ) -> SignerConfig:
        """The signer settings, with the secrets the front end supplies (never stored here)."""
        from rolesanywhere_hsm.signers.base import SignerConfig

        return SignerConfig.from_source(self.key_source, secret_callback, pkcs8_password=pkcs8_password,
                                        tpm_key_password=tpm_key_password)

    def cache_key(self) -> str:
        """A stable hex key naming these credentials (rolesanywhere_hsm.cachekey: the rule, and
        why a hit may compute it from the settings before validating). No token is touched."""
        call = {name: getattr(self, name) for name in self._compared if name not in KEY_FIELDS}
        return cache_key(**call, **self.key_source.fields())
