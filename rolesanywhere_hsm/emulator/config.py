"""Load the emulator's account (trust anchors, CRLs, profiles, roles) from a TOML or JSON file.

The format is documented in docs/emulator.md. Every mistake becomes a UsageError of one line
naming the file and the key, because the CLI prints it as is.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rolesanywhere_hsm.errors import UsageError
from rolesanywhere_hsm.emulator.resources import (
    DEFAULT_ACCOUNT,
    DEFAULT_REGION,
    EmulatorConfig,
    Profile,
    Role,
    TrustAnchor,
    check_credential_lifetime,
    parse_arn,
)

__all__ = ["config_from_mapping", "load_certificates", "load_config", "load_crls"]

_TOP_KEYS = {
    "region", "account", "partition", "role_max_session_duration", "skew_seconds", "allow_p521",
    "credential_lifetime",
    "trust_anchors", "profiles", "roles",
}
_ANCHOR_KEYS = {"arn", "certificates", "crls", "enabled"}
_PROFILE_KEYS = {
    "arn", "role_arns", "duration_seconds", "accept_role_session_name", "enabled",
    "require_instance_properties", "session_policy", "managed_policy_arns",
}
_ROLE_KEYS = {"arn", "max_session_duration"}


def load_certificates(path: str | Path) -> list[Any]:
    """All certificates in a PEM file (one or more) or a DER file."""
    from cryptography import x509

    data = _read(path)
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise UsageError(f"{path}: not a PEM or DER certificate ({exc})") from None
    return certs


def load_crls(path: str | Path) -> list[Any]:
    """The CRLs in a PEM file (one or more) or a DER file."""
    from cryptography import x509

    data = _read(path)
    try:
        if b"-----BEGIN" in data:
            marker = b"-----BEGIN X509 CRL-----"
            blocks = [marker + block for block in data.split(marker)[1:]]
            if not blocks:
                raise ValueError("no X509 CRL block")
            return [x509.load_pem_x509_crl(block) for block in blocks]
        return [x509.load_der_x509_crl(data)]
    except ValueError as exc:
        raise UsageError(f"{path}: not a PEM or DER CRL ({exc})") from None


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def load_config(path: str | Path) -> EmulatorConfig:
    """Read a config file: JSON if it ends in .json, else TOML. Paths in it are relative to it."""
    path = Path(path)
    text = _read(path)
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = tomllib.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError and TOMLDecodeError are both
        raise UsageError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the top level must be a table/object")
    return config_from_mapping(data, base_dir=path.parent, source=str(path))


def config_from_mapping(
    data: dict[str, Any], *, base_dir: str | Path = ".", source: str = "config"
) -> EmulatorConfig:
    """Build an EmulatorConfig from the parsed file (see docs/emulator.md for the keys)."""
    base = Path(base_dir)

    def fail(where: str, what: str) -> UsageError:
        return UsageError(f"{source}: {where}: {what}")

    def get(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str,
            default: Any = None, required: bool = False) -> Any:
        if key not in table:
            if required:
                raise fail(where, f"missing key {key!r}")
            return default
        value = table[key]
        # bool is an int in Python; a duration of `true` is a mistake, not 1 second.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise fail(where, f"{key!r} has the wrong type ({type(value).__name__})")
        return value

    def check_keys(table: Any, allowed: set[str], where: str) -> dict[str, Any]:
        if not isinstance(table, dict):
            raise fail(where, "must be a table/object")
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise fail(where, f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
        return table

    def strings(table: dict[str, Any], key: str, where: str, required: bool = False) -> list[str]:
        values = get(table, key, list, where, [], required)
        if not all(isinstance(v, str) for v in values):
            raise fail(where, f"{key!r} must be a list of strings")
        return values

    def guarded(where: str, build: Callable[[], Any]) -> Any:
        try:
            return build()
        except UsageError as exc:
            raise fail(where, exc.message) from None

    check_keys(data, _TOP_KEYS, "top level")
    anchors = get(data, "trust_anchors", list, "top level", required=True)
    if not anchors:
        raise fail("top level", "'trust_anchors' is empty")
    region = get(data, "region", str, "top level")
    account = get(data, "account", str, "top level")
    partition = get(data, "partition", str, "top level")
    first = anchors[0].get("arn") if isinstance(anchors[0], dict) else None
    if first and not (region and account):
        # Region and account default to the first trust anchor's, as the client's do.
        try:
            arn = parse_arn(first, "trust-anchor")
            region, account, partition = region or arn.region, account or arn.account, partition or arn.partition
        except ValueError:
            pass  # reported below, with its place in the file
    config = EmulatorConfig(
        region=region or DEFAULT_REGION,
        account=account or DEFAULT_ACCOUNT,
        partition=partition or "aws",
        role_max_session_duration=get(data, "role_max_session_duration", int, "top level", 3600),
        skew_seconds=get(data, "skew_seconds", int, "top level", 300),
        allow_p521=get(data, "allow_p521", bool, "top level", True),
    )
    config.credential_lifetime = get(data, "credential_lifetime", int, "top level")
    guarded("top level", lambda: check_credential_lifetime(config.credential_lifetime))
    for i, table in enumerate(anchors):
        where = f"trust_anchors[{i}]"
        check_keys(table, _ANCHOR_KEYS, where)
        certs = [c for p in strings(table, "certificates", where, True) for c in guarded(where, lambda p=p: load_certificates(base / p))]
        crls = [c for p in strings(table, "crls", where) for c in guarded(where, lambda p=p: load_crls(base / p))]
        anchor = TrustAnchor(
            get(table, "arn", str, where, required=True), certs, crls,
            enabled=get(table, "enabled", bool, where, True),
        )
        guarded(where, lambda a=anchor: config.add_trust_anchor(a))
    for i, table in enumerate(get(data, "profiles", list, "top level", [])):
        where = f"profiles[{i}]"
        check_keys(table, _PROFILE_KEYS, where)
        profile = Profile(
            arn=get(table, "arn", str, where, required=True),
            role_arns=strings(table, "role_arns", where, True),
            duration_seconds=get(table, "duration_seconds", int, where, 3600),
            accept_role_session_name=get(table, "accept_role_session_name", bool, where, False),
            enabled=get(table, "enabled", bool, where, True),
            require_instance_properties=get(table, "require_instance_properties", bool, where, False),
            session_policy=get(table, "session_policy", str, where),
            managed_policy_arns=strings(table, "managed_policy_arns", where),
        )
        guarded(where, lambda p=profile: config.add_profile(p))
    for i, table in enumerate(get(data, "roles", list, "top level", [])):
        where = f"roles[{i}]"
        check_keys(table, _ROLE_KEYS, where)
        role = Role(
            get(table, "arn", str, where, required=True),
            get(table, "max_session_duration", int, where, 3600),
        )
        guarded(where, lambda r=role: config.add_role(r))
    return config
