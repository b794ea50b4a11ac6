"""Which URL to send CreateSession to: partitions, FIPS, dual-stack, and user overrides.

Order of precedence (the official helper's, docs/protocol.md section 1): `--endpoint`, then
`AWS_ENDPOINT_URL_ROLESANYWHERE`, then `AWS_ENDPOINT_URL`, then the regional default shaped by
`AWS_USE_FIPS_ENDPOINT` / `AWS_USE_DUALSTACK_ENDPOINT`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from rolesanywhere_hsm.errors import EndpointError
from rolesanywhere_hsm.redact import redact

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a cache hit
if TYPE_CHECKING:
    from typing import Any

__all__ = ["FIPS_REGIONS", "default_endpoint", "endpoint_source", "resolve_endpoint"]

FIPS_REGIONS = frozenset(
    {"us-east-1", "us-east-2", "us-west-1", "us-west-2", "us-gov-east-1", "us-gov-west-1"}
)


def _is_china(region: str) -> bool:
    return region.startswith("cn-")


def default_endpoint(region: str, *, fips: bool = False, dualstack: bool = False) -> str:
    if fips:
        if region not in FIPS_REGIONS:
            raise EndpointError(
                f"Roles Anywhere has no FIPS endpoint in {region}.",
                hint=f"FIPS endpoints exist in {', '.join(sorted(FIPS_REGIONS))}; unset AWS_USE_FIPS_ENDPOINT.",
            )
        if dualstack:
            return f"https://rolesanywhere-fips.{region}.api.aws"
        return f"https://rolesanywhere-fips.{region}.amazonaws.com"
    if dualstack:
        suffix = "api.amazonwebservices.com.cn" if _is_china(region) else "api.aws"
    else:
        suffix = "amazonaws.com.cn" if _is_china(region) else "amazonaws.com"
    return f"https://rolesanywhere.{region}.{suffix}"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


# What an IP address literal is made of: a host with anything else is a name, known without
# importing ipaddress (which a cache hit with a named endpoint then never loads).
_IP_CHARACTERS = frozenset("0123456789abcdefABCDEF.:%")


def _ip_address(host: str) -> Any:
    """ipaddress.ip_address(host), or None when `host` is not an IP address literal."""
    if not host or not _IP_CHARACTERS.issuperset(host):
        return None
    import ipaddress

    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    address = _ip_address(host)
    return address is not None and address.is_loopback


def _is_ip(host: str) -> bool:
    return _ip_address(host) is not None


def _check_override(url: str, source: str) -> str:
    from urllib.parse import urlsplit  # here: a cache hit checks no URL

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number in range)
        if parts.hostname and not _is_ip(parts.hostname):
            parts.hostname.encode("idna")  # an empty or overlong label: UnicodeError, a ValueError
    except ValueError as exc:
        raise EndpointError(
            f"The endpoint '{redact(url)}' from {source} is not a valid URL ({exc}).",
            hint="Give a URL such as https://rolesanywhere.us-east-1.amazonaws.com.",
        ) from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise EndpointError(
            f"The endpoint {redact(url)!r} from {source} is not an http(s) URL.",
            hint="Give a URL such as https://rolesanywhere.us-east-1.amazonaws.com.",
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise EndpointError(
            f"The endpoint {redact(url)!r} from {source} uses plain http to a host that is not loopback.",
            hint="Use https; plain http is only allowed to 127.0.0.1, ::1 or localhost.",
        )
    return url.rstrip("/")


def resolve_endpoint(
    region: str, override: str | None = None, environ: Mapping[str, str] | None = None
) -> str:
    """The base URL (no path) to POST /sessions to."""
    source = endpoint_source(region, override, environ)
    if source[0] != "default":
        return _check_override(source[1], source[0])
    return default_endpoint(region, fips=source[2], dualstack=source[3])


_OVERRIDES = ("AWS_ENDPOINT_URL_ROLESANYWHERE", "AWS_ENDPOINT_URL")


def endpoint_source(
    region: str, override: str | None = None, environ: Mapping[str, str] | None = None
) -> tuple[str, str, bool, bool]:
    """What decides the endpoint, unchecked: (where, the URL given) for an override (where is
    "--endpoint" or the variable's name), else ("default", region, fips, dualstack). The cache
    key is made of this, so that a hit neither parses nor checks a URL (urllib.parse and
    ipaddress stay unloaded); the miss that stored the entry checked it (resolve_endpoint)."""
    env = os.environ if environ is None else environ
    if override:
        return ("--endpoint", override, False, False)
    for var in _OVERRIDES:
        if env.get(var):
            return (var, env[var], False, False)
    return ("default", region, _truthy(env.get("AWS_USE_FIPS_ENDPOINT")),
            _truthy(env.get("AWS_USE_DUALSTACK_ENDPOINT")))
