"""The way to the service: ARNs and region, proxy, endpoint and TLS, the clock against the
endpoint's Date, and with --call a real CreateSession."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rolesanywhere_hsm.doctor.checks import (
    CLOCK_SKEW_LIMIT,
    CLOCK_SKEW_WARNING,
    FAIL,
    PASS,
    PROBE_TIMEOUT,
    SKIP,
    WARN,
    Check,
    Run,
    from_error,
)
from rolesanywhere_hsm.errors import RolesAnywhereError, ServiceError
from rolesanywhere_hsm.redact import redact

__all__ = ["arn_checks", "call_check", "clock_check", "endpoint_region", "network_checks", "proxy_for"]


def arn_checks(run: Run) -> None:
    from rolesanywhere_hsm.arn import validate_session_arns
    from rolesanywhere_hsm.endpoints import resolve_endpoint

    options = run.options
    try:
        run.arns = validate_session_arns(options.trust_anchor_arn, options.profile_arn, options.role_arn)
    except RolesAnywhereError as exc:
        run.add(from_error("arns", exc))
        run.add(Check("region", SKIP, "not checked: arns did not pass"))
        return
    run.add(Check("arns", PASS, f"trust anchor, profile and role in {run.arns.partition}, "
                  f"{run.arns.region}, account {run.arns.trust_anchor.account}"))
    region = run.arns.region
    if options.region and options.region != region:
        run.add(Check("region", FAIL, f"--region {options.region} but the trust anchor is in {region}",
                      "Drop --region (the trust anchor's region is used) or make it match."))
        return
    try:
        run.endpoint = resolve_endpoint(region, options.endpoint, options.environ)
    except RolesAnywhereError as exc:
        run.add(from_error("region", exc))
        return
    host_region = endpoint_region(run.endpoint)
    if host_region is not None and host_region != region:
        run.add(Check("region", FAIL, f"the endpoint {run.endpoint} is in {host_region} but the "
                      f"trust anchor is in {region}", "Use the endpoint of the trust anchor's "
                      "region (or drop --endpoint / AWS_ENDPOINT_URL*)."))
        run.endpoint = None
        return
    run.add(Check("region", PASS, f"signing for {region} at {run.endpoint}"))


def endpoint_region(url: str) -> str | None:
    """PURE: the region in an AWS Roles Anywhere host name, or None (a private endpoint)."""
    import re
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    match = re.fullmatch(r"rolesanywhere(?:-fips)?\.([a-z0-9-]+)\.(?:amazonaws\.com(?:\.cn)?|api\.aws|"
                         r"api\.amazonwebservices\.com\.cn)", host)
    return match.group(1) if match else None


def proxy_for(url: str, trust_env: bool) -> str | None:
    """The proxy httpx will use for `url` with this environment (HTTPS_PROXY, ALL_PROXY,
    NO_PROXY...), or None for a direct connection. Uses httpx's own rules so that the answer is
    what the client does."""
    if not trust_env:
        return None
    import httpx
    from httpx._utils import URLPattern, get_environment_proxies  # httpx's own matching

    target = httpx.URL(url)
    for pattern, proxy in sorted((URLPattern(k), v) for k, v in get_environment_proxies().items()):
        if pattern.matches(target):
            return proxy
    return None


def network_checks(run: Run) -> None:
    options = run.options
    if run.endpoint is None:
        for name in ("proxy", "endpoint", "clock"):
            run.add(Check(name, SKIP, "not checked: region did not pass"))
        return
    try:
        proxy = proxy_for(run.endpoint, options.trust_env)
    except Exception as exc:  # noqa: BLE001 (a malformed variable: say so, go on)
        run.add(Check("proxy", WARN, f"the proxy variables cannot be read: {exc}",
                      "Check HTTPS_PROXY, ALL_PROXY and NO_PROXY."))
    else:
        if proxy is None:
            why = " (--no-proxy)" if not options.trust_env else ""
            run.add(Check("proxy", PASS, f"direct connection to {run.endpoint}{why}"))
        else:
            run.add(Check("proxy", PASS, f"through the proxy {redact(proxy)} (from the "
                          "environment; set NO_PROXY or pass --no-proxy to go direct)"))
    run.add(_endpoint_check(run))
    if not run.ok("endpoint"):
        run.add(Check("clock", SKIP, "not checked: endpoint did not pass"))


def _endpoint_check(run: Run) -> Check:
    """One GET to the endpoint: reachable, TLS verified, and its Date against our clock."""
    import ssl

    import httpx

    options = run.options
    verify: Any = options.verify
    try:
        if isinstance(verify, str):
            verify = ssl.create_default_context(cafile=verify)
        with httpx.Client(verify=verify, trust_env=options.trust_env,
                          timeout=httpx.Timeout(PROBE_TIMEOUT)) as client:
            sent_at = options.clock()
            response = client.get(run.endpoint + "/")
            received_at = options.clock()
    except (OSError, ValueError) as exc:
        return Check("endpoint", FAIL, f"cannot set up HTTPS: {exc}",
                     "Check --ca-bundle / AWS_CA_BUNDLE and the proxy variables.")
    except httpx.ConnectError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "SSL" in str(exc):
            return Check("endpoint", FAIL, f"TLS verification of {run.endpoint} failed: {exc}",
                         "Pass --ca-bundle (or AWS_CA_BUNDLE) for a private CA, or check the "
                         "proxy (a TLS-inspecting proxy needs its CA in the bundle).")
        return Check("endpoint", FAIL, f"cannot connect to {run.endpoint}: {exc}",
                     "Check the network, the proxy settings and --endpoint.")
    except httpx.HTTPError as exc:
        return Check("endpoint", FAIL, f"{run.endpoint} did not answer: {type(exc).__name__} {exc}",
                     "Check the network, the proxy settings and --endpoint.")
    tls = "TLS not verified (--no-verify-ssl)" if options.verify is False else (
        "TLS verified" if run.endpoint.startswith("https:") else "plain http (loopback)")
    status = WARN if options.verify is False else PASS
    run.add(Check("endpoint", status, f"{run.endpoint} answered HTTP {response.status_code}; {tls}",
                  "Drop --no-verify-ssl: credentials travel over this connection."
                  if status == WARN else ""))
    midpoint = sent_at + (received_at - sent_at) / 2
    return clock_check(response.headers.get("Date"), midpoint, run.endpoint)


def clock_check(date_header: str | None, local: dt.datetime, endpoint: str) -> Check:
    """PURE: the local clock against the endpoint's Date header."""
    from email.utils import parsedate_to_datetime

    if not date_header:
        return Check("clock", WARN, f"{endpoint} sent no Date header: the clock was not compared",
                     "Check that the clock is synchronised (timedatectl, chrony).")
    try:
        remote = parsedate_to_datetime(date_header)
    except (TypeError, ValueError):
        return Check("clock", WARN, f"the Date header {date_header!r} does not parse",
                     "Check that the clock is synchronised (timedatectl, chrony).")
    skew = local - remote
    seconds = abs(skew.total_seconds())
    direction = "ahead of" if skew.total_seconds() > 0 else "behind"
    text = f"the local clock is {seconds:.0f} s {direction} the endpoint's"
    if abs(skew) > CLOCK_SKEW_LIMIT:
        return Check("clock", FAIL, text + f" (more than {CLOCK_SKEW_LIMIT.seconds // 60} minutes: "
                     "the service answers \"Invalid signature\")",
                     "Set the clock right: enable time synchronisation (`timedatectl "
                     "set-ntp true`, chrony) and check the time zone.")
    if abs(skew) > CLOCK_SKEW_WARNING:
        return Check("clock", WARN, text, "Enable time synchronisation before the skew reaches "
                     f"{CLOCK_SKEW_LIMIT.seconds // 60} minutes.")
    return Check("clock", PASS, text)


def call_check(run: Run) -> None:
    if not run.options.call:
        run.add(Check("call", SKIP, "no --call: CreateSession was not called"))
        return
    if run.skip_unless("call", "signature", "arns", "region", "endpoint"):
        return
    from rolesanywhere_hsm.client import RetryPolicy, RolesAnywhereClient

    options = run.options
    try:
        with RolesAnywhereClient(run.arns.region, endpoint=run.endpoint, verify=options.verify,
                                 trust_env=options.trust_env, retry=RetryPolicy(attempts=1)) as client:
            credentials = client.create_session(run.signer, run.arns,
                                                duration_seconds=options.session_duration,
                                                role_session_name=options.role_session_name)
    except ServiceError as exc:
        run.add(Check("call", FAIL, exc.message, _service_fix(exc, run.checks), code=exc.code))
        return
    except RolesAnywhereError as exc:
        run.add(from_error("call", exc))
        return
    expiration = getattr(credentials, "expiration", None)
    until = f", valid until {expiration:%Y-%m-%dT%H:%M:%SZ}" if isinstance(expiration, dt.datetime) else ""
    run.add(Check("call", PASS, f"CreateSession issued credentials (access key "
                  f"{credentials.access_key_id[:4]}...){until}"))


def _service_fix(exc: ServiceError, checks: list[Check]) -> str:
    """The service's vague refusals, pointed at what the checks above found."""
    status = {c.name: c.status for c in checks}
    if "Untrusted signing certificate" in exc.message:
        broken = [n for n in ("leaf", "validity", "chain-length", "chain-path") if status.get(n) == FAIL]
        if broken:
            return f"See the {', '.join(broken)} check(s) above."
        if status.get("chain-path") == SKIP:
            return ("Run with --trust-anchor-ca (the CA registered in the trust anchor) to check the "
                    "path; check also that the trust anchor is the one of this CA and that no "
                    "imported CRL revokes the certificate.")
        return ("The path to --trust-anchor-ca is fine here: check that the trust anchor holds that "
                "CA, is enabled, and that no CRL imported into it revokes the certificate.")
    if "Invalid signature" in exc.message:
        if status.get("clock") == FAIL:
            return "See the clock check above."
        return ("Check the clock (within 5 minutes of the service's) and any proxy that rewrites "
                "signed headers; the key and certificate pair here.")
    return exc.hint or ""
