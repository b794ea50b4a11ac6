"""Every check CreateSession makes before it issues credentials (docs/protocol.md section 4).

The order is fixed and documented in docs/emulator.md, because a client test that breaks two
rules at once must know which refusal to expect:

1. the signature envelope (Authorization, algorithm, scope, region, signed headers, skew,
   chain length), then the leaf's serial and the signature itself;
2. the request's own fields (ARN shapes, durationSeconds, roleSessionName, instanceProperties:
   400 ValidationException);
3. the leaf's requirements; 4. the trust anchor and a path to it; 5. revocation;
6. the profile, the role and the session-name / instance-property permissions.

Nothing here knows HTTP: it takes the request as received and a clock reading, and either
returns a `VerifiedRequest` or raises a `Rejection`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec

from rolesanywhere_hsm.emulator import canonical
from rolesanywhere_hsm.emulator.rejections import (
    SESSION_NAME_NOT_AUTHORIZED,
    Rejection,
    access_denied,
    invalid_signature,
    not_found,
    unable_to_assume,
    untrusted_certificate,
    validation,
)
from rolesanywhere_hsm.emulator.resources import (
    MAX_DURATION,
    MIN_DURATION,
    EmulatorConfig,
    Profile,
    TrustAnchor,
    parse_arn,
)
from rolesanywhere_hsm.emulator.trust import build_path, check_leaf, check_not_revoked
from rolesanywhere_hsm.x509 import public_key_type, verify_signature

__all__ = ["ReceivedRequest", "VerifiedRequest", "verify_create_session"]

# docs/protocol.md section 3: headers that must be signed (x-amz-x509-chain too when it is sent).
REQUIRED_SIGNED_HEADERS = ("content-type", "host", "x-amz-date", "x-amz-x509")
MAX_CHAIN_CERTIFICATES = 5
DEFAULT_DURATION = 3600
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
# docs/protocol.md section 2: AssumeRole's limits on a role session name.
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)
_MAX_INSTANCE_PROPERTIES = 50
_MAX_PROPERTY_LENGTH = 200


@dataclass(frozen=True)
class ReceivedRequest:
    """A request as it came off the wire: nothing normalised, so the signature can be rebuilt."""

    method: str
    path: str
    raw_query: str
    headers: Sequence[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The value of a header sent once; None when absent. Sent twice counts as malformed."""
        values = [v for k, v in self.headers if k.lower() == name]
        if len(values) > 1:
            raise invalid_signature(f"header {name} sent {len(values)} times")
        return values[0] if values else None


@dataclass(frozen=True)
class VerifiedRequest:
    """A request that passed every check: what `issue.py` needs to make credentials."""

    leaf: x509.Certificate
    path: list[x509.Certificate]
    trust_anchor: TrustAnchor
    profile: Profile
    role_arn: str
    requested_duration: int
    role_session_name: str | None
    instance_properties: dict[str, str] = field(default_factory=dict)
    algorithm: str = ""


def _decode_certificate(text: str, what: str) -> x509.Certificate:
    try:
        der = base64.b64decode(text.strip(), validate=True)
        return x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError) as exc:
        raise untrusted_certificate(f"{what} is not a base64 DER certificate ({exc})") from None


def _check_envelope(
    request: ReceivedRequest, config: EmulatorConfig, now: dt.datetime
) -> tuple[canonical.Authorization, str, x509.Certificate, list[x509.Certificate]]:
    authorization = request.header("authorization")
    if authorization is None:
        raise invalid_signature("no Authorization header")
    try:
        auth = canonical.parse_authorization(authorization)
    except canonical.AuthorizationSyntaxError as exc:
        raise invalid_signature(f"Authorization header: {exc}") from None
    if auth.algorithm not in canonical.ALGORITHMS:
        raise invalid_signature(f"unknown algorithm {auth.algorithm!r}")
    amz_date = request.header("x-amz-date")
    if amz_date is None:
        raise invalid_signature("no X-Amz-Date header")
    try:
        signed_at = dt.datetime.strptime(amz_date, _AMZ_DATE).replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise invalid_signature(f"X-Amz-Date {amz_date!r} is not YYYYMMDDTHHMMSSZ") from None
    if auth.date != amz_date[:8]:
        raise invalid_signature(f"scope date {auth.date} is not the X-Amz-Date date {amz_date[:8]}")
    if auth.service != canonical.SERVICE:
        raise invalid_signature(f"scope service {auth.service!r} is not {canonical.SERVICE!r}")
    if auth.region != config.region:
        raise invalid_signature(f"scope region {auth.region!r} is not this server's {config.region!r}")
    chain_header = request.header("x-amz-x509-chain")
    required = REQUIRED_SIGNED_HEADERS + (("x-amz-x509-chain",) if chain_header is not None else ())
    missing = [h for h in required if h not in auth.signed_headers]
    if missing:
        raise invalid_signature(f"headers not signed: {', '.join(missing)}")
    skew = abs((now - signed_at).total_seconds())
    if skew > config.skew_seconds:
        raise invalid_signature(
            f"X-Amz-Date {amz_date} is {int(skew)} s from the server clock "
            f"(window {config.skew_seconds} s)"
        )
    chain_parts = [p for p in (chain_header or "").split(",") if p.strip()]
    if len(chain_parts) > MAX_CHAIN_CERTIFICATES:
        raise untrusted_certificate(
            f"X-Amz-X509-Chain holds {len(chain_parts)} certificates (at most {MAX_CHAIN_CERTIFICATES})"
        )
    leaf_header = request.header("x-amz-x509")
    if leaf_header is None:
        raise invalid_signature("no X-Amz-X509 header")
    leaf = _decode_certificate(leaf_header, "X-Amz-X509")
    chain = [_decode_certificate(p, f"X-Amz-X509-Chain item {i}") for i, p in enumerate(chain_parts)]
    return auth, amz_date, leaf, chain


def _check_signature(
    request: ReceivedRequest, config: EmulatorConfig, auth: canonical.Authorization,
    amz_date: str, leaf: x509.Certificate,
) -> None:
    if int(auth.serial) != leaf.serial_number:
        raise invalid_signature(
            f"Credential serial {auth.serial} is not the leaf's serial {leaf.serial_number}"
        )
    try:
        key = leaf.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise untrusted_certificate(f"leaf public key unsupported ({exc})") from None
    key_type = public_key_type(key)
    wanted = canonical.ALGORITHMS[auth.algorithm]
    if key_type != wanted:
        raise invalid_signature(f"algorithm {auth.algorithm} needs an {wanted} key, the leaf has {key_type}")
    if key_type == "EC" and isinstance(key.curve, ec.SECP521R1) and not config.allow_p521:
        raise untrusted_certificate("P-521 keys are refused (allow_p521 is false)")
    try:
        canon = canonical.canonical_request(
            request.method, request.path, request.raw_query, request.headers,
            auth.signed_headers, request.body,
        )
    except KeyError as exc:
        raise invalid_signature(f"signed header {exc.args[0]} was not sent") from None
    to_sign = canonical.string_to_sign(auth.algorithm, amz_date, auth.scope, canon)
    if not verify_signature(key, to_sign.encode("utf-8"), auth.signature):
        raise invalid_signature("signature does not verify over the canonical request")


@dataclass
class _Input:
    trust_anchor_arn: str
    profile_arn: str
    role_arn: str
    duration: int
    role_session_name: str | None
    instance_properties: dict[str, str]


def _constraint(value: object, member: str, constraint: str) -> Rejection:
    # The wording of AWS's own model validation errors.
    return validation(
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
        f"constraint: {constraint}"
    )


def _parse_input(request: ReceivedRequest, config: EmulatorConfig) -> _Input:
    body: dict[str, Any] = {}
    if request.body.strip():
        try:
            parsed = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            raise validation("Request body is not valid JSON.") from None
        if not isinstance(parsed, dict):
            raise validation("Request body must be a JSON object.")
        body = parsed
    query: dict[str, str] = {}
    for item in request.raw_query.split("&"):
        if item:
            name, _, value = item.partition("=")
            query[unquote(name)] = unquote(value)
    arns: dict[str, str] = {}
    for name, kind in (("trustAnchorArn", "trust-anchor"), ("profileArn", "profile"), ("roleArn", "role")):
        in_query, in_body = query.get(name), body.get(name)
        if in_query is not None and in_body is not None and in_query != in_body:
            raise validation(f"{name} differs between the query string and the body.")
        value = in_query if in_query is not None else in_body
        if value is None:
            raise validation(f"1 validation error detected: Value null at '{name}' failed to satisfy constraint: Member must not be null")
        if not isinstance(value, str):
            raise _constraint(value, name, "Member must be a string")
        try:
            arn = parse_arn(value, kind)
        except ValueError:
            raise _constraint(value, name, f"Member must be a valid {kind} ARN") from None
        if kind != "role" and arn.region != config.region:
            raise validation(
                f"{name} is in region {arn.region}, not this endpoint's {config.region}.",
            )
        arns[name] = value
    if parse_arn(arns["trustAnchorArn"], "trust-anchor").account != parse_arn(arns["profileArn"], "profile").account:
        raise validation("The trust anchor and the profile are not in the same account.")
    duration = body.get("durationSeconds", DEFAULT_DURATION)
    if not isinstance(duration, int) or isinstance(duration, bool):
        raise _constraint(duration, "durationSeconds", "Member must be an integer")
    if duration < MIN_DURATION:
        raise _constraint(duration, "durationSeconds", f"Member must have value greater than or equal to {MIN_DURATION}")
    if duration > MAX_DURATION:
        raise _constraint(duration, "durationSeconds", f"Member must have value less than or equal to {MAX_DURATION}")
    session_name = body.get("roleSessionName")
    if session_name is not None and (not isinstance(session_name, str) or not _SESSION_NAME.fullmatch(session_name)):
        raise _constraint(
            session_name, "roleSessionName",
            r"Member must satisfy regular expression pattern: [\w+=,.@-]{2,64}",
        )
    properties = body.get("instanceProperties", {})
    if not isinstance(properties, dict):
        raise _constraint(properties, "instanceProperties", "Member must be a map")
    if len(properties) > _MAX_INSTANCE_PROPERTIES:
        raise _constraint(len(properties), "instanceProperties", f"Member must have at most {_MAX_INSTANCE_PROPERTIES} entries")
    for key, value in properties.items():
        for item in (key, value):
            if not isinstance(item, str) or not 1 <= len(item) <= _MAX_PROPERTY_LENGTH:
                raise _constraint(item, "instanceProperties", f"Member must have length between 1 and {_MAX_PROPERTY_LENGTH}")
    return _Input(arns["trustAnchorArn"], arns["profileArn"], arns["roleArn"], duration, session_name, dict(properties))


def verify_create_session(
    request: ReceivedRequest, config: EmulatorConfig, now: dt.datetime
) -> VerifiedRequest:
    """Run every check in the order of the module docstring; raise the first Rejection."""
    auth, amz_date, leaf, chain = _check_envelope(request, config, now)
    _check_signature(request, config, auth, amz_date, leaf)
    wanted = _parse_input(request, config)
    check_leaf(leaf, now)
    anchor = config.trust_anchors.get(wanted.trust_anchor_arn)
    if anchor is None:
        raise not_found(f"Trust anchor {wanted.trust_anchor_arn} not found")
    if not anchor.enabled:
        raise untrusted_certificate(f"trust anchor {anchor.arn} is disabled")
    path = build_path(leaf, chain, anchor, now)
    check_not_revoked(path, anchor)
    profile = config.profiles.get(wanted.profile_arn)
    if profile is None:
        raise not_found(f"Profile {wanted.profile_arn} not found")
    if not profile.enabled:
        raise unable_to_assume(wanted.role_arn, f"profile {profile.arn} is disabled")
    if wanted.role_arn not in profile.role_arns:
        raise unable_to_assume(wanted.role_arn, f"role is not in profile {profile.arn}")
    if wanted.role_session_name is not None and not profile.accept_role_session_name:
        raise access_denied(SESSION_NAME_NOT_AUTHORIZED, "profile does not accept roleSessionName")
    if profile.require_instance_properties and not wanted.instance_properties:
        raise access_denied(
            "Instance properties are required by this profile.",
            "profile requires instanceProperties and none were sent",
        )
    return VerifiedRequest(
        leaf=leaf,
        path=path,
        trust_anchor=anchor,
        profile=profile,
        role_arn=wanted.role_arn,
        requested_duration=wanted.duration,
        role_session_name=wanted.role_session_name,
        instance_properties=wanted.instance_properties,
        algorithm=auth.algorithm,
    )
