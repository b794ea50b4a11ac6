"""What a credential session tells its observers: each CreateSession attempt and each
certificate rotation, as plain records.

The audit log (rolesanywhere_hsm.audit) and the metrics (rolesanywhere_hsm.metrics) are
observers: callables a `CredentialSession` calls with an `Attempt` or a `Rotation`. The records
carry no secret: an attempt holds the credentials' expiry and AccessKeyId, never the secret key
or the session token, and where the key lives as the user named it (redacted: no pin-value).
An observer that fails is logged and ignored: observing must never cost a credential.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["Attempt", "CertificateSummary", "Observer", "Rotation", "certificate_summary", "notify"]

log = logging.getLogger("rolesanywhere_hsm.session")


@dataclass(frozen=True)
class CertificateSummary:
    """The public facts of a certificate that logs, audit lines and metrics name."""

    serial: str  # hex, lower case, as `openssl x509 -serial` shows it (without leading zeros)
    subject: str
    issuer: str
    not_after: dt.datetime


@lru_cache(maxsize=16)
def certificate_summary(der: bytes) -> CertificateSummary:
    """Serial, subject, issuer and not-after of a DER certificate (cached: the same leaf is
    summarised at every refresh)."""
    from asn1crypto import x509 as asn1_x509

    from rolesanywhere_hsm.x509 import certificate_info

    info = certificate_info(der)
    not_after = asn1_x509.Certificate.load(der)["tbs_certificate"]["validity"]["not_after"].native
    return CertificateSummary(f"{info.serial:x}", info.subject, info.issuer, not_after)


@dataclass(frozen=True)
class Attempt:
    """One CreateSession attempt of a session (a fetch: with its own retries inside)."""

    time: dt.datetime  # when it started
    seconds: float  # how long it took, signing included
    outcome: str  # "success" or "failure"
    error_code: str | None  # our stable code (RAH-...) on failure
    certificate: CertificateSummary | None  # None when the key store could not be opened
    key: str | None  # where the key lives: a file path or a pkcs11: URI (redacted)
    token_serial: str | None
    trust_anchor_arn: str
    profile_arn: str
    role_arn: str
    role_session_name: str | None
    duration_seconds: int
    expiration: dt.datetime | None = None  # success only
    access_key_id: str | None = None  # success only; never the secret key or session token
    throttled: bool = False


@dataclass(frozen=True)
class Rotation:
    """A renewed certificate seen at a refresh: applied, or refused (its key does not match)."""

    outcome: str  # "applied" or "refused"
    old: CertificateSummary
    new: CertificateSummary | None  # None when the new file could not even be read
    reason: str | None = None


Observer = Callable[[object], None]


def notify(observers: Iterable[Observer], event: Attempt | Rotation) -> None:
    for observer in observers:
        try:
            observer(event)
        except Exception as exc:  # noqa: BLE001 (observing must never cost a credential)
            log.warning("an observer failed (%s); carrying on", type(exc).__name__)
