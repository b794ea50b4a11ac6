"""Whether a proxy from the environment applies to an endpoint, decided as httpx decides it.

The client sends directly with the standard library (rolesanywhere_hsm.directhttp) only when
httpx, given the same environment, would itself connect directly (and would set up without an
error): then loading httpx is pure cost. Everything else (a proxy that applies, a platform where
urllib reads proxies from system settings, a NO_PROXY entry or a proxy URL in a form not
mirrored here) goes to httpx, which handles every form it supports. Pure: `environ` in, a bool
out; a test checks it against httpx's own decision over many inputs.

httpx's rules (httpx._utils.get_environment_proxies, over urllib's getproxies_environment):
`<scheme>_proxy` in any case, the lower-case name winning and an empty one removing; HTTP_PROXY
ignored under CGI (REQUEST_METHOD set); only http, https and all are used. NO_PROXY (or
no_proxy) is a comma-separated list: `*` turns every proxy off; an IPv4 or IPv6 address or
`localhost` matches that host exactly (an IPv4 CIDR matches its network address only, as httpx
reads it); `.example.com` matches names under it; `example.com` matches it and names under it.
"""

from __future__ import annotations

import ipaddress

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["environment_proxies", "goes_direct"]

_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")
_PROXY_SCHEMES = ("http", "https", "all")


def environment_proxies(environ: Mapping[str, str]) -> dict[str, str]:
    """urllib.request.getproxies_environment, on `environ`: scheme -> value."""
    proxies: dict[str, str] = {}
    for name, value in environ.items():
        name = name.lower()
        if value and name[-6:] == "_proxy":
            proxies[name[:-6]] = value
    if "REQUEST_METHOD" in environ:
        proxies.pop("http", None)
    for name, value in environ.items():
        if name[-6:] == "_proxy":
            name = name.lower()
            if value:
                proxies[name[:-6]] = value
            else:
                proxies.pop(name[:-6], None)
    return proxies


def _plain_name(name: str) -> bool:
    """Lower-case letters, digits, hyphens and dots in non-empty labels."""
    return bool(name) and set(name) <= _NAME_CHARACTERS and all(name.split("."))


def _ipv4(text: str) -> str | None:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return None


def _no_proxy_matcher(entry: str) -> tuple[str, str] | None:
    """(kind, value) for a NO_PROXY entry mirrored here; None for one left to httpx."""
    lowered = entry.lower()
    address, slash, bits = entry.partition("/")
    if _ipv4(address) == address and (not slash or (bits.isdigit() and len(bits) <= 2)):
        return ("exact", address)
    if not slash and ":" in entry:
        try:
            ipaddress.IPv6Address(entry)
        except ValueError:
            return None
        return ("never", "")  # our direct endpoints are names or IPv4 addresses
    if lowered == "localhost":
        return ("exact", "localhost")
    if lowered.startswith(".") and _plain_name(lowered[1:]):
        return ("under", lowered[1:])
    if _plain_name(lowered):
        return ("name", lowered)
    return None


def _plain_proxy_url(value: str) -> bool:
    """A proxy URL httpx certainly accepts: http(s)://host[:port][/] (or host[:port])."""
    url = value if "://" in value else f"http://{value}"
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in ("http", "https"):
        return False
    rest = rest[:-1] if rest.endswith("/") else rest
    host, colon, port = rest.partition(":")
    if colon and not (port.isdigit() and 0 < int(port) < 65536 and len(port) <= 5):
        return False
    return _plain_name(host.lower()) or _ipv4(host) == host


def goes_direct(scheme: str, host: str, environ: Mapping[str, str], *, trust_env: bool = True,
                platform: str = "linux") -> bool:
    """Whether httpx, made with `trust_env`, would send to `scheme://host` with no proxy (and
    would set up without an error about a proxy variable). `host` is lower-case, as a URL has
    it. False also when in doubt: the caller then uses httpx, which is always right."""
    if not trust_env:
        return True  # httpx reads no proxy variable at all
    if platform in ("darwin", "win32", "cygwin"):
        return False  # urllib falls back on the system's proxy settings there
    proxies = environment_proxies(environ)
    active = {name: proxies[name] for name in _PROXY_SCHEMES if proxies.get(name)}
    entries = [entry.strip() for entry in proxies.get("no", "").split(",")]
    if "*" in entries:
        return True  # httpx drops every proxy
    matched = False
    for entry in entries:
        if not entry:
            continue
        matcher = _no_proxy_matcher(entry)
        if matcher is None:
            return False  # a form httpx reads its own way (ports, schemes, wildcards...)
        kind, value = matcher
        if kind == "exact":
            matched = matched or host == value
        elif kind == "under":
            matched = matched or host.endswith("." + value) and len(host) > len(value) + 1
        elif kind == "name":
            matched = matched or host == value or host.endswith("." + value)
    if not active:
        return True
    if not all(_plain_proxy_url(value) for value in active.values()):
        return False  # httpx would refuse or need more to set it up: let it say so
    if matched:
        return True
    return "all" not in active and scheme not in active
