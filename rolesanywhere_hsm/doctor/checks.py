"""doctor's vocabulary: a check's verdict, the options, and the run state the checks share."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from rolesanywhere_hsm.errors import CertificateError, RolesAnywhereError
from rolesanywhere_hsm.signers.base import SignerConfig

__all__ = [
    "CLOCK_SKEW_LIMIT",
    "EXIT_CHECK_FAILED",
    "EXPIRY_WARNING",
    "FAIL",
    "PASS",
    "certificate_on_token",
    "SKIP",
    "WARN",
    "Check",
    "DoctorOptions",
    "Run",
    "failed",
    "from_error",
]


PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
# The service refuses a request whose X-Amz-Date is further than this from its clock, and
# says only "Invalid signature" (docs/protocol.md).
CLOCK_SKEW_LIMIT = dt.timedelta(minutes=5)
CLOCK_SKEW_WARNING = dt.timedelta(minutes=1)
EXPIRY_WARNING = dt.timedelta(days=30)
# `doctor` exits with this when at least one check failed (docs/cli.md, "doctor").
EXIT_CHECK_FAILED = 8
# Bounded: doctor must end in bounded time even when the endpoint does not answer.
PROBE_TIMEOUT = 10.0
TEST_MESSAGE = b"rolesanywhere-hsm doctor: test signature"
NO_PIN_SOURCE = "no PIN source and no terminal to ask on"

Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class Check:
    """One link's verdict. `fix` says what to do when the status is warn or fail."""

    name: str
    status: str
    message: str
    fix: str = ""
    code: str = ""  # the error's stable code (docs/errors.md) when an error of ours failed it

    def as_dict(self) -> dict[str, str]:
        out = asdict(self)
        if not self.code:
            del out["code"]
        return out


def failed(checks: list[Check]) -> bool:
    return any(c.status == FAIL for c in checks)


@dataclass(frozen=True)
class DoctorOptions:
    """What credential-process would be given, plus the trust anchor's CA and `call`."""

    signer: SignerConfig
    trust_anchor_arn: str
    profile_arn: str
    role_arn: str
    region: str | None = None
    endpoint: str | None = None
    session_duration: int = 3600
    role_session_name: str | None = None
    verify: bool | str = True
    trust_env: bool = True
    trust_anchor_ca: str | None = None
    call: bool = False
    attestation_roots: str | None = None  # --attestation-roots: add the attestation check
    clock: Clock = _utcnow
    environ: Mapping[str, str] | None = None
    contain_module_noise: bool = True  # off with --debug: the module's stderr is shown


def certificate_on_token(config: SignerConfig) -> bool:
    """PURE: the leaf comes from a token: --certificate is a pkcs11: URI, or --cert-selector
    alone picks it among the tokens' certificates."""
    if config.certificate is None:
        return config.cert_selector is not None and not config.private_key
    return config.certificate[:7].lower() == "pkcs11:"


def from_error(name: str, exc: RolesAnywhereError) -> Check:
    """A failed check from one of our errors: its message, and its hint as the fix."""
    return Check(name, FAIL, exc.message, exc.hint or "", code=exc.code)


@dataclass
class Run:
    """The state the checks hand on: what passed, and the objects later checks need."""

    options: DoctorOptions
    checks: list[Check] = field(default_factory=list)
    certificate: bytes | None = None  # the leaf, DER
    given_chain: list[bytes] = field(default_factory=list)  # as the user gave it, in order
    signer: Any = None
    token: Any = None  # TokenSnapshot of the token holding the certificate or key
    module_path: str | None = None
    endpoint: str | None = None
    arns: Any = None
    pending_certificate_error: CertificateError | None = None
    # the chain the key would send, as `locate` found it without a login (None: not known)
    located_chain: tuple[bytes, ...] | None = None
    # what `locate` found wrong with the chain (setting "intermediates"): the chain checks
    # render these instead of ordering the chain again
    chain_findings: list[Any] = field(default_factory=list)

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self.options.environ is None else self.options.environ

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        return check

    def ok(self, *names: str) -> bool:
        """Whether every named check ran and passed (a warning counts as passed)."""
        status = {c.name: c.status for c in self.checks}
        return all(status.get(n) in (PASS, WARN) for n in names)

    def skip_unless(self, name: str, *needs: str) -> bool:
        """Add a skip for `name` unless every check in `needs` passed; True when skipped."""
        missing = [n for n in needs if not self.ok(n)]
        if missing:
            self.add(Check(name, SKIP, f"not checked: {', '.join(missing)} did not pass"))
            return True
        return False
