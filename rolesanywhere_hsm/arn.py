"""ARNs of trust anchors, profiles and roles: parse, validate, and agree on region and account.

We check shapes before signing anything, so that a typo costs a clear message instead of a
token PIN entry and a 400 from the service. Shapes: docs/protocol.md section 2.
"""

from __future__ import annotations

import re

from rolesanywhere_hsm.errors import ArnError
from rolesanywhere_hsm.record import Record

__all__ = ["Arn", "SessionArns", "parse_arn", "validate_session_arns"]

_PARTITIONS = ("aws", "aws-cn", "aws-us-gov", "aws-iso", "aws-iso-b", "aws-iso-e", "aws-iso-f", "aws-eusc")
_ARN = re.compile(
    r"^arn:(?P<partition>[a-z-]+):(?P<service>[a-z0-9-]+):(?P<region>[a-z0-9-]*):"
    r"(?P<account>\d{12}|):(?P<resource>.+)$"
)
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_ROLE_RESOURCE = re.compile(r"^role/(?:[\x21-\x7e]+/)*[\w+=,.@-]{1,64}$")


class Arn(Record):
    """The five parts of an ARN (a plain frozen class: rolesanywhere_hsm.record)."""

    _compared = ("partition", "service", "region", "account", "resource")
    __slots__ = _compared

    partition: str
    service: str
    region: str
    account: str
    resource: str

    def __init__(self, partition: str, service: str, region: str, account: str, resource: str) -> None:
        self._set(partition=partition, service=service, region=region, account=account, resource=resource)

    def __str__(self) -> str:
        return f"arn:{self.partition}:{self.service}:{self.region}:{self.account}:{self.resource}"


def parse_arn(value: str, *, what: str = "ARN") -> Arn:
    match = _ARN.match(value.strip())
    if not match:
        raise ArnError(
            f"The {what} {value!r} is not an ARN.",
            hint="An ARN looks like arn:aws:rolesanywhere:us-east-1:111122223333:trust-anchor/<uuid>.",
        )
    arn = Arn(**match.groupdict())
    if arn.partition not in _PARTITIONS:
        raise ArnError(f"The {what} {value!r} names an unknown partition {arn.partition!r}.")
    return arn


def _expect(arn: Arn, value: str, what: str, service: str, resource: str) -> None:
    if arn.service != service:
        raise ArnError(
            f"The {what} {value!r} is an {arn.service} ARN, not a {service} one.",
            hint=f"Check that you did not swap the {what} with another ARN.",
        )
    if not re.fullmatch(resource, arn.resource):
        kind = resource.split("/", 1)[0]
        raise ArnError(
            f"The {what} {value!r} does not name a {kind} resource.",
            hint=f"Expected ...:{kind}/<uuid> at the end of the ARN.",
        )


class SessionArns(Record):
    """The three ARNs of a CreateSession call, checked against each other."""

    _compared = ("trust_anchor", "profile", "role")
    __slots__ = _compared

    trust_anchor: Arn
    profile: Arn
    role: Arn

    def __init__(self, trust_anchor: Arn, profile: Arn, role: Arn) -> None:
        self._set(trust_anchor=trust_anchor, profile=profile, role=role)

    @property
    def region(self) -> str:
        return self.trust_anchor.region

    @property
    def partition(self) -> str:
        return self.trust_anchor.partition


def validate_session_arns(trust_anchor_arn: str, profile_arn: str, role_arn: str) -> SessionArns:
    """Parse the three ARNs; the anchor and profile must share partition, region and account."""
    anchor = parse_arn(trust_anchor_arn, what="trust anchor ARN")
    _expect(anchor, trust_anchor_arn, "trust anchor ARN", "rolesanywhere", rf"trust-anchor/{_UUID}")
    profile = parse_arn(profile_arn, what="profile ARN")
    _expect(profile, profile_arn, "profile ARN", "rolesanywhere", rf"profile/{_UUID}")
    role = parse_arn(role_arn, what="role ARN")
    if role.service != "iam" or not _ROLE_RESOURCE.match(role.resource) or role.region:
        raise ArnError(
            f"The role ARN {role_arn!r} is not an IAM role ARN.",
            hint="A role ARN looks like arn:aws:iam::111122223333:role/MyRole.",
        )
    if not anchor.region:
        raise ArnError(f"The trust anchor ARN {trust_anchor_arn!r} has no region.")
    if (anchor.partition, anchor.region, anchor.account) != (
        profile.partition,
        profile.region,
        profile.account,
    ):
        raise ArnError(
            f"The trust anchor ({anchor.partition}, {anchor.region}, {anchor.account}) and the "
            f"profile ({profile.partition}, {profile.region}, {profile.account}) must be in the "
            "same partition, region and account.",
            hint="Take both ARNs from the same Roles Anywhere console page.",
        )
    if role.partition != anchor.partition:
        raise ArnError(
            f"The role ARN is in partition {role.partition!r}, the trust anchor in {anchor.partition!r}."
        )
    return SessionArns(anchor, profile, role)
