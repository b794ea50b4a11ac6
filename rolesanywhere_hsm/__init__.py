"""rolesanywhere-hsm: temporary AWS credentials from IAM Roles Anywhere, signed in a PKCS#11 token."""

from __future__ import annotations

__version__ = "0.1.0"
