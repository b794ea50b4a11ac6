"""The bundled IAM Roles Anywhere emulator: the server side of CreateSession, for tests and
offline use. It checks what the real service checks (docs/protocol.md section 4) with its own
canonicalisation, and answers as the service does (section 5). See docs/emulator.md.

    from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
    config = EmulatorConfig.for_certificates([ca_cert])
    with Emulator(config) as emulator:
        ...  # POST {emulator.url}/sessions; emulator.last_issued
"""

from __future__ import annotations

from rolesanywhere_hsm.emulator.config import config_from_mapping, load_certificates, load_config, load_crls
from rolesanywhere_hsm.emulator.issue import IssuedCredentials
from rolesanywhere_hsm.emulator.rejections import Rejection
from rolesanywhere_hsm.emulator.resources import (
    DEFAULT_ACCOUNT,
    DEFAULT_REGION,
    EmulatorConfig,
    Profile,
    Role,
    TrustAnchor,
    default_profile_arn,
    default_role_arn,
    default_trust_anchor_arn,
)
from rolesanywhere_hsm.emulator.service import DISCONNECT, Emulator, Fault, RecordedRequest
from rolesanywhere_hsm.emulator.verify import ReceivedRequest

__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_REGION",
    "DISCONNECT",
    "Emulator",
    "EmulatorConfig",
    "Fault",
    "IssuedCredentials",
    "Profile",
    "ReceivedRequest",
    "RecordedRequest",
    "Rejection",
    "Role",
    "TrustAnchor",
    "config_from_mapping",
    "default_profile_arn",
    "default_role_arn",
    "default_trust_anchor_arn",
    "load_certificates",
    "load_config",
    "load_crls",
]
