"""Make the temporary credentials for a verified request and the 201 body that carries them
(PROTOCOL.md sections 4 item 7 and 5).

The values are random and worthless outside the emulator, but shaped like STS's (an `ASIA`
access key id, a 40-character secret, a long session token) so that clients which validate
shapes accept them. What a real service would derive (duration, session name, source identity,
session tags) is derived the same way and recorded, so tests can assert on it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from rolesanywhere_hsm.emulator.resources import EmulatorConfig, parse_arn
from rolesanywhere_hsm.emulator.verify import VerifiedRequest

__all__ = [
    "IssuedCredentials",
    "effective_duration",
    "issue_credentials",
    "session_tags",
    "source_identity",
]

_KEY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # what STS key ids are made of
_MAX_SOURCE_IDENTITY_CN = 61  # "CN=" + 61 characters = STS's 64-character limit
# Attribute names in session tags, as the service writes them (x509Subject/CN, ...).
_TAG_ATTRIBUTES = {
    NameOID.COMMON_NAME: "CN",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
}
_NAMESPACE = uuid.UUID("0b6f7c4e-2f8e-4f4d-9a41-1d3c7d5a9e20")


@dataclass(frozen=True)
class IssuedCredentials:
    """One credential set the emulator handed out, with everything it was derived from."""

    access_key_id: str
    secret_access_key: str = field(repr=False)  # never in a log line or a test report
    session_token: str = field(repr=False)
    expiration: dt.datetime
    duration_seconds: int
    role_arn: str
    role_session_name: str
    source_identity: str | None
    session_tags: dict[str, str]
    profile_arn: str
    trust_anchor_arn: str
    leaf_serial: int
    subject_arn: str
    assumed_role_arn: str
    assumed_role_id: str
    instance_properties: dict[str, str] = field(default_factory=dict)

    def response_body(self) -> dict[str, Any]:
        """The 201 JSON of PROTOCOL.md section 5."""
        entry: dict[str, Any] = {
            "assumedRoleUser": {"arn": self.assumed_role_arn, "assumedRoleId": self.assumed_role_id},
            "credentials": {
                "accessKeyId": self.access_key_id,
                "expiration": self.expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "secretAccessKey": self.secret_access_key,
                "sessionToken": self.session_token,
            },
            "packedPolicySize": _packed_policy_size(self.session_tags),
            "roleArn": self.role_arn,
        }
        if self.source_identity is not None:
            entry["sourceIdentity"] = self.source_identity
        return {"credentialSet": [entry], "subjectArn": self.subject_arn}


def _packed_policy_size(tags: dict[str, str]) -> int:
    # STS reports the packed size of tags and policies as a percentage of its limit; a
    # plausible figure is enough, clients only display it.
    return min(100, 5 + sum(len(k) + len(v) for k, v in tags.items()) // 20)


def _random_id(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(length))


def _common_name(name: x509.Name) -> str | None:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def source_identity(leaf: x509.Certificate) -> str | None:
    """`CN={cn}` when the subject has a CN of at most 61 characters, else None."""
    cn = _common_name(leaf.subject)
    return f"CN={cn}" if cn and len(cn) <= _MAX_SOURCE_IDENTITY_CN else None


def session_tags(leaf: x509.Certificate) -> dict[str, str]:
    """Session tags from the certificate: x509Subject/*, x509Issuer/*, x509SAN/DNS|URI|Name.

    The first value of each attribute wins, as the service keeps one tag per key.
    """
    tags: dict[str, str] = {}
    for prefix, name in (("x509Subject", leaf.subject), ("x509Issuer", leaf.issuer)):
        for attribute in name:
            short = _TAG_ATTRIBUTES.get(attribute.oid)
            if short:
                tags.setdefault(f"{prefix}/{short}", str(attribute.value))
    try:
        san = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        return tags
    for kind, key in ((x509.DNSName, "DNS"), (x509.UniformResourceIdentifier, "URI")):
        values = san.get_values_for_type(kind)
        if values:
            tags[f"x509SAN/{key}"] = str(values[0])
    names = san.get_values_for_type(x509.DirectoryName)
    if names:
        tags["x509SAN/Name"] = names[0].rfc4514_string()
    return tags


def effective_duration(verified: VerifiedRequest, config: EmulatorConfig) -> int:
    """PROTOCOL.md section 2: min(request, profile, role's MaxSessionDuration)."""
    return min(
        verified.requested_duration,
        verified.profile.duration_seconds,
        config.role_max(verified.role_arn),
    )


def _expiration(now: dt.datetime, duration: int, test_lifetime: int | None) -> dt.datetime:
    """Whole seconds, as on the wire. A test lifetime is rounded up, not down, so that a
    5-second credential lives at least 5 seconds."""
    if test_lifetime is None:
        return (now + dt.timedelta(seconds=duration)).replace(microsecond=0)
    end = now + dt.timedelta(seconds=test_lifetime)
    return end.replace(microsecond=0) + dt.timedelta(seconds=1 if end.microsecond else 0)


def issue_credentials(
    verified: VerifiedRequest, config: EmulatorConfig, now: dt.datetime
) -> IssuedCredentials:
    duration = effective_duration(verified, config)
    leaf = verified.leaf
    session_name = verified.role_session_name or format(leaf.serial_number, "x")
    role = parse_arn(verified.role_arn, "role")
    role_name = role.resource.rsplit("/", 1)[-1]
    # The same certificate subject and issuer always map to the same subject ARN, as in AWS.
    subject_id = uuid.uuid5(
        _NAMESPACE, hashlib.sha256(leaf.subject.public_bytes() + leaf.issuer.public_bytes()).hexdigest()
    )
    role_id = "AROA" + base64.b32encode(hashlib.sha256(verified.role_arn.encode()).digest()).decode()[:17]
    return IssuedCredentials(
        access_key_id=_random_id("ASIA", 16),
        secret_access_key=base64.b64encode(secrets.token_bytes(30)).decode(),
        session_token=base64.b64encode(b"rolesanywhere-hsm-emulator:" + secrets.token_bytes(300)).decode(),
        expiration=_expiration(now, duration, config.credential_lifetime),
        duration_seconds=duration,
        role_arn=verified.role_arn,
        role_session_name=session_name,
        source_identity=source_identity(leaf),
        session_tags=session_tags(leaf),
        profile_arn=verified.profile.arn,
        trust_anchor_arn=verified.trust_anchor.arn,
        leaf_serial=leaf.serial_number,
        subject_arn=(
            f"arn:{config.partition}:rolesanywhere:{config.region}:{config.account}:subject/{subject_id}"
        ),
        assumed_role_arn=f"arn:{role.partition}:sts::{role.account}:assumed-role/{role_name}/{session_name}",
        assumed_role_id=f"{role_id}:{session_name}",
        instance_properties=dict(verified.instance_properties),
    )
