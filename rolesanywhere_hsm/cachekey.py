"""The cache key of a credential source: one rule, used by a miss and by a hit alike.

A miss validates its source (`CredentialSpec`) and stores the credentials under
`CredentialSpec.cache_key()`; a `credential-process --cache` hit computes the key from the
resolved settings (`hit_key`) before any validation, so that it needs neither `re` (the ARN and
role-session-name checks) nor `json`. That is sound because:
- both call `cache_key()` with the same arguments: `spec_fields(settings)` is what
  `CredentialSpec.from_settings` constructs the spec with, and the spec keeps them as given;
- the key text holds every value the spec's validation reads, in a form from which the
  validation's outcome follows (an ARN stripped, as `parse_arn` strips it; a file reference with
  the text given, so that "" and "." stay apart), and the text is encoded injectively (`repr` of
  a tuple of strings, numbers, booleans and None) before it is hashed;
- validation is pure: so equal keys mean equal validation outcomes, and an entry exists only
  under a key whose inputs a miss validated. An input that would fail validation can never
  produce a stored key: it finds no entry and goes the normal way, which reports the error.
A `--cert-selector file://...` is the exception (its validation reads the file, which the key
names by identity only): `hit_key` gives no key for it, and such a run validates first.

A `pin-value` in a URI is left out of the key (the key may become a file name, and a hash of
a short PIN is easy to reverse); removing it never changes what the spec's checks see (the
reference stays a `pkcs11:` URI).

Imports nothing heavy: os, stat, our digest and endpoint modules.
"""

from __future__ import annotations

import os
import stat

from rolesanywhere_hsm.digest import sha256_hex
from rolesanywhere_hsm.endpoints import endpoint_source

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a cache hit
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from rolesanywhere_hsm.settings import Settings

__all__ = ["KEY_FIELDS", "KEY_VERSION", "cache_key", "hit_key", "key_fields", "module_configuration", "spec_fields",
           "tls_verify"]

KEY_VERSION = "rah-spec-4"
# Environment variables through which a PKCS#11 module (or the daemon behind it) chooses the
# token store it opens, read at C_Initialize: the same URI names another token when one of them
# changes. The rule: every variable of these modules' families (by prefix), each with its value
# and, when the value names a file or directory, that file's identity (a SOFTHSM2_CONF edited to
# another tokendir). A variable that may hold a secret never enters the key.
_MODULE_CONFIG_PREFIXES = (
    "SOFTHSM2_",          # SoftHSM2: SOFTHSM2_CONF
    "TPM2_PKCS11_",       # tpm2-pkcs11: TPM2_PKCS11_STORE, TPM2_PKCS11_TCTI
    "TSS2_",              # the TPM software stack under tpm2-pkcs11 (TSS2_TCTI, TSS2_FAPICONF)
    "P11_KIT_",           # p11-kit's client module: P11_KIT_SERVER_ADDRESS
    "PCSCLITE_",          # the PC/SC daemon behind OpenSC and ykcs11: PCSCLITE_CSOCK_NAME
    "OPENSC_",            # OpenSC: OPENSC_CONF
    "YKCS11_",            # ykcs11
    "ChrystokiConfigurationPath",  # Thales Luna client
)
_SECRET_WORDS = ("PIN", "PASS", "SECRET", "TOKEN_AUTH", "AUTH_VALUE")


# The KeySource fields, in the order the cache key and CredentialSpec list them.
KEY_FIELDS = (
    "certificate", "private_key", "intermediates", "pkcs11_lib", "reuse_pin",
    "no_tpm_key_password", "cert_selector", "use_latest_expiring_certificate", "token_chain",
)


def key_fields(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The KeySource keywords from resolved options (rolesanywhere_hsm.settings): the one
    mapping from option names to key settings. A command whose table lacks an option (e.g.
    `read-certificate-data` takes no key) gets that option's default."""
    get = settings.get
    return {
        "certificate": get("certificate"),
        "private_key": get("private-key"),
        "intermediates": get("intermediates"),
        "pkcs11_lib": get("pkcs11-lib"),
        "reuse_pin": get("reuse-pin", False),
        "no_tpm_key_password": get("no-tpm-key-password", False),
        "cert_selector": get("cert-selector"),
        "use_latest_expiring_certificate": get("use-latest-expiring-certificate", False),
        "token_chain": not get("no-token-chain", False),
    }


def tls_verify(settings: Settings) -> bool | str:
    """httpx's `verify` from resolved options: off (--no-verify-ssl), a CA bundle (--ca-bundle
    or AWS_CA_BUNDLE, through the option table), or the system store."""
    if settings["no-verify-ssl"]:
        return False
    return settings["ca-bundle"] or True


def spec_fields(settings: Settings) -> dict[str, Any]:
    """CredentialSpec's keyword arguments from resolved options: what `from_settings` builds
    the spec from and what a hit computes the key from (one mapping, so they cannot differ)."""
    return {
        **key_fields(settings),  # the key's settings: the one mapping (KeySource's too)
        "trust_anchor_arn": settings["trust-anchor-arn"],
        "profile_arn": settings["profile-arn"],
        "role_arn": settings["role-arn"],
        "region": settings["region"],
        "endpoint": settings["endpoint"],
        "duration_seconds": settings["session-duration"],
        "role_session_name": settings["role-session-name"],
        "verify": tls_verify(settings),
        "trust_env": not settings["no-proxy"],
        "timeout": settings["timeout"],
    }


def hit_key(settings: Settings) -> str | None:
    """The key a hit looks up, unvalidated (module docstring); None when the key alone cannot
    stand for the validation (a selector read from a file): that run validates first."""
    fields = spec_fields(settings)
    selector = fields["cert_selector"]
    if isinstance(selector, str) and selector.startswith("file://"):
        return None
    return cache_key(**fields)


def cache_key(*, certificate: str | None, trust_anchor_arn: str, profile_arn: str, role_arn: str,
              private_key: str | None, intermediates: str | None, pkcs11_lib: str | None,
              reuse_pin: bool, region: str | None, endpoint: str | None, duration_seconds: int,
              role_session_name: str | None, verify: bool | str, trust_env: bool,
              timeout: float | None, no_tpm_key_password: bool, cert_selector: Any,
              use_latest_expiring_certificate: bool, token_chain: bool,
              environ: Mapping[str, str] | None = None) -> str:
    """A stable hex key naming these credentials: the source's values, what chooses the
    endpoint now (AWS_ENDPOINT_URL* and the FIPS/dual-stack switches change it), the PKCS#11
    modules' configuration, and the identity (device, inode, size, mtime) of the files it
    names, so that a renewed certificate file gives a new key. No token or module is touched."""
    environ = os.environ if environ is None else environ
    anchor = trust_anchor_arn.strip()
    parts = anchor.split(":")
    signing_region = parts[3] if len(parts) > 3 else ""  # the trust anchor's, as parse_arn reads it
    text = (
        ("v", KEY_VERSION),
        ("certificate", _reference(certificate)),
        ("private_key", _reference(private_key)),
        ("intermediates", _reference(intermediates)),
        ("pkcs11_lib", pkcs11_lib),
        ("reuse_pin", reuse_pin),
        ("trust_anchor_arn", anchor),
        ("profile_arn", profile_arn.strip()),
        ("role_arn", role_arn.strip()),
        ("region", region),
        ("endpoint", endpoint_source(signing_region, endpoint, environ)),
        ("duration_seconds", duration_seconds),
        ("role_session_name", role_session_name),
        ("verify", verify),
        ("trust_env", trust_env),
        ("timeout", timeout),
        ("no_tpm_key_password", no_tpm_key_password),
        ("cert_selector", _selector_reference(cert_selector)),
        ("use_latest_expiring_certificate", use_latest_expiring_certificate),
        ("token_chain", token_chain),
        ("module_config", module_configuration(environ)),
    )
    # repr of a tuple of str, int, float, bool and None (and tuples of them) is injective and
    # needs no json (which imports re); lone surrogates in a path are escaped by repr.
    return sha256_hex(repr(text).encode("utf-8"))


def _selector_reference(selector: Any) -> Any:
    """A --cert-selector for the cache key: a selector file by its identity, else its text."""
    if isinstance(selector, str) and selector.startswith("file://"):
        return ("file", _reference(selector[len("file://"):]))
    return selector if selector is None or isinstance(selector, str) else ("parsed", repr(selector))


def _reference(ref: str | None) -> Any:
    """A key or certificate reference for the cache key: a URI without its PIN, or a file's
    text, absolute path and identity."""
    if ref is None:
        return None
    if ref[:7].lower() == "pkcs11:":
        from rolesanywhere_hsm.redact import without_pin_attributes

        return without_pin_attributes(ref)
    path = os.path.abspath(ref)
    try:
        st = os.stat(path)
    except OSError:
        return (ref, path, None)
    return (ref, path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def module_configuration(environ: Mapping[str, str]) -> tuple[Any, ...]:
    """The PKCS#11 modules' configuration for the cache key (the rule at _MODULE_CONFIG_PREFIXES):
    sorted (name, value, identity of the file it names, if any)."""
    found = []
    for name, value in environ.items():
        if not name.startswith(_MODULE_CONFIG_PREFIXES):
            continue
        if any(word in name.upper() for word in _SECRET_WORDS):
            continue
        identity: tuple[int, ...] | None = None
        if value.startswith("/"):
            try:
                st = os.stat(value)
                # a directory (a token store) by what it is, not by its mtime, which its
                # database's journal files change on every use
                identity = ((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                            if stat.S_ISREG(st.st_mode) else (st.st_dev, st.st_ino))
            except OSError:
                pass
        found.append((name, value, identity))
    return tuple(sorted(found, key=lambda item: (item[0], item[1])))
