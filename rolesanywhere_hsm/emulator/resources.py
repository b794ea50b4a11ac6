"""What the emulated account holds: trust anchors (CA bundles and imported CRLs), profiles
and roles, with the server's region and policy knobs.

Everything here is plain data that tests build from Python and `config.py` builds from a file;
the checks that use it live in `verify.py`. Default ARNs are derived from the CA certificate,
so the same CA always gets the same ARNs and a user can paste them once.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rolesanywhere_hsm.errors import UsageError

if TYPE_CHECKING:
    from cryptography import x509

__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_REGION",
    "DEFAULT_ROLE_NAME",
    "Arn",
    "EmulatorConfig",
    "Profile",
    "Role",
    "TrustAnchor",
    "default_profile_arn",
    "default_role_arn",
    "default_trust_anchor_arn",
    "parse_arn",
]

DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT = "111122223333"  # the account AWS documentation uses in examples
DEFAULT_ROLE_NAME = "rolesanywhere-hsm-emulator"
# Fixed namespace so that default ARNs are a pure function of the CA certificate.
_ARN_NAMESPACE = uuid.UUID("6f1c1c0e-58a4-4b83-9a35-5d1f6f0e7a11")

_ARN = re.compile(
    r"arn:(?P<partition>aws|aws-cn|aws-us-gov):(?P<service>[a-z0-9-]+):(?P<region>[a-z0-9-]*):"
    r"(?P<account>\d{12}):(?P<resource>.+)"
)
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_RESOURCE_SHAPES = {
    "trust-anchor": re.compile(rf"trust-anchor/{_UUID}"),
    "profile": re.compile(rf"profile/{_UUID}"),
    "role": re.compile(r"role/(?:[\x21-\x7e]+/)?[\w+=,.@-]{1,64}"),
}

# PROTOCOL.md section 2: AssumeRole's own limits.
MIN_DURATION = 900
MAX_DURATION = 43200


@dataclass(frozen=True)
class Arn:
    text: str
    partition: str
    service: str
    region: str
    account: str
    resource: str


def parse_arn(text: str, kind: str) -> Arn:
    """Parse an ARN of `kind` ("trust-anchor", "profile" or "role"); ValueError if malformed."""
    m = _ARN.fullmatch(text or "")
    want_service = "iam" if kind == "role" else "rolesanywhere"
    if (
        not m
        or m["service"] != want_service
        or not _RESOURCE_SHAPES[kind].fullmatch(m["resource"])
        or (kind == "role") != (m["region"] == "")
    ):
        raise ValueError(f"{text!r} is not a {kind} ARN")
    return Arn(text, m["partition"], m["service"], m["region"], m["account"], m["resource"])


@dataclass
class TrustAnchor:
    """A CA bundle registered as one trust anchor: any certificate in it may end a path."""

    arn: str
    certificates: list[x509.Certificate]
    crls: list[x509.CertificateRevocationList] = field(default_factory=list)
    enabled: bool = True


@dataclass
class Profile:
    """A profile as CreateProfile makes it. Session policy fields are kept, not enforced."""

    arn: str
    role_arns: list[str]
    duration_seconds: int = 3600
    accept_role_session_name: bool = False
    enabled: bool = True
    require_instance_properties: bool = False
    session_policy: str | None = None
    managed_policy_arns: list[str] = field(default_factory=list)


@dataclass
class Role:
    """An IAM role; only its MaxSessionDuration matters to CreateSession."""

    arn: str
    max_session_duration: int = 3600


def default_trust_anchor_arn(
    ca_der: bytes, region: str = DEFAULT_REGION, account: str = DEFAULT_ACCOUNT,
    partition: str = "aws",
) -> str:
    ident = uuid.uuid5(_ARN_NAMESPACE, "trust-anchor:" + hashlib.sha256(ca_der).hexdigest())
    return f"arn:{partition}:rolesanywhere:{region}:{account}:trust-anchor/{ident}"


def default_profile_arn(trust_anchor_arn: str) -> str:
    arn = parse_arn(trust_anchor_arn, "trust-anchor")
    ident = uuid.uuid5(_ARN_NAMESPACE, "profile:" + trust_anchor_arn)
    return f"arn:{arn.partition}:rolesanywhere:{arn.region}:{arn.account}:profile/{ident}"


def default_role_arn(account: str = DEFAULT_ACCOUNT, partition: str = "aws") -> str:
    return f"arn:{partition}:iam::{account}:role/{DEFAULT_ROLE_NAME}"


@dataclass
class EmulatorConfig:
    """The emulated account and the server's knobs.

    `role_max_session_duration` is the MaxSessionDuration of roles not listed in `roles`
    (IAM's default is 3600). `skew_seconds` is how far X-Amz-Date may be from the server's
    clock. `allow_p521` accepts ECDSA P-521 leaves (PROTOCOL.md marks it uncertain).
    `credential_lifetime` (seconds, for tests of refreshing) makes issued credentials expire
    that long after issue, whatever duration was granted: AWS never goes below 900 seconds,
    so tests of refresh loops would otherwise wait for a quarter of an hour.
    """

    region: str = DEFAULT_REGION
    account: str = DEFAULT_ACCOUNT
    partition: str = "aws"
    trust_anchors: dict[str, TrustAnchor] = field(default_factory=dict)
    profiles: dict[str, Profile] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=dict)
    role_max_session_duration: int = 3600
    skew_seconds: int = 300
    allow_p521: bool = True
    credential_lifetime: int | None = None

    def __post_init__(self) -> None:
        check_credential_lifetime(self.credential_lifetime)

    def add_trust_anchor(self, anchor: TrustAnchor) -> TrustAnchor:
        self._check_resource_arn(anchor.arn, "trust-anchor")
        if not anchor.certificates:
            raise UsageError(f"trust anchor {anchor.arn} has no CA certificate")
        self.trust_anchors[anchor.arn] = anchor
        return anchor

    def add_profile(self, profile: Profile) -> Profile:
        self._check_resource_arn(profile.arn, "profile")
        for role_arn in profile.role_arns:
            self._check_arn(role_arn, "role")
        if not MIN_DURATION <= profile.duration_seconds <= MAX_DURATION:
            raise UsageError(
                f"profile {profile.arn}: duration_seconds {profile.duration_seconds} is not in "
                f"{MIN_DURATION}..{MAX_DURATION}"
            )
        self.profiles[profile.arn] = profile
        return profile

    def add_role(self, role: Role) -> Role:
        self._check_arn(role.arn, "role")
        if not MIN_DURATION <= role.max_session_duration <= MAX_DURATION:
            raise UsageError(
                f"role {role.arn}: max_session_duration {role.max_session_duration} is not in "
                f"{MIN_DURATION}..{MAX_DURATION}"
            )
        self.roles[role.arn] = role
        return role

    def role_max(self, role_arn: str) -> int:
        role = self.roles.get(role_arn)
        return role.max_session_duration if role else self.role_max_session_duration

    def _check_arn(self, text: str, kind: str) -> Arn:
        try:
            return parse_arn(text, kind)
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    def _check_resource_arn(self, text: str, kind: str) -> None:
        arn = self._check_arn(text, kind)
        if (arn.partition, arn.region, arn.account) != (self.partition, self.region, self.account):
            raise UsageError(
                f"{kind} {text} is not in this emulator's partition, region and account "
                f"({self.partition}, {self.region}, {self.account})"
            )

    @classmethod
    def for_certificates(
        cls,
        ca_certificates: Sequence[x509.Certificate],
        *,
        crls: Iterable[x509.CertificateRevocationList] = (),
        region: str = DEFAULT_REGION,
        account: str = DEFAULT_ACCOUNT,
        trust_anchor_arn: str | None = None,
        profile_arn: str | None = None,
        role_arns: Sequence[str] = (),
        **knobs: object,
    ) -> EmulatorConfig:
        """One trust anchor holding `ca_certificates`, one profile allowing `role_arns`.

        Missing ARNs get the defaults (derived from the first CA certificate; role
        `rolesanywhere-hsm-emulator`). The region and account follow `trust_anchor_arn` when
        given.
        """
        from cryptography.hazmat.primitives.serialization import Encoding

        if not ca_certificates:
            raise UsageError("the emulator needs at least one CA certificate to trust")
        if trust_anchor_arn:
            try:
                arn = parse_arn(trust_anchor_arn, "trust-anchor")
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            region, account, partition = arn.region, arn.account, arn.partition
        else:
            partition = "aws"
            trust_anchor_arn = default_trust_anchor_arn(
                ca_certificates[0].public_bytes(Encoding.DER), region, account, partition
            )
        config = cls(region=region, account=account, partition=partition, **knobs)  # type: ignore[arg-type]
        config.add_trust_anchor(TrustAnchor(trust_anchor_arn, list(ca_certificates), list(crls)))
        config.add_profile(
            Profile(
                profile_arn or default_profile_arn(trust_anchor_arn),
                list(role_arns) or [default_role_arn(account, partition)],
            )
        )
        return config

    @property
    def trust_anchor_arn(self) -> str:
        """The only trust anchor's ARN (convenience for the common one-anchor setup)."""
        return _only(self.trust_anchors, "trust anchor")

    @property
    def profile_arn(self) -> str:
        return _only(self.profiles, "profile")

    @property
    def role_arn(self) -> str:
        """The first role of the only profile."""
        return self.profiles[self.profile_arn].role_arns[0]


def check_credential_lifetime(seconds: int | None) -> None:
    """1..43200 seconds, or None (the granted duration, as AWS does)."""
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int)
                                or not 1 <= seconds <= MAX_DURATION):
        raise UsageError(f"credential_lifetime {seconds!r} is not in 1..{MAX_DURATION} seconds")


def _only(items: dict[str, object], what: str) -> str:
    if len(items) != 1:
        raise LookupError(f"the emulator has {len(items)} {what}s, not exactly one")
    return next(iter(items))
