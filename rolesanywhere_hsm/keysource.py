"""`KeySource`: what the user said about the key, read from the settings once, never a secret.

Every consumer of a key (the credential session, `doctor`, `read-certificate-data`,
`sign-string`, provisioning) used to map the resolved options onto the signer's settings by
hand, each a little differently. The mapping now exists once: `cachekey.key_fields(settings)`
names the options that choose a key (it sits there because a cache hit computes its key from
the same mapping without importing this module), `KeySource.from_settings` builds the value, and the
signer-facing `SignerConfig` is made from it in one place (`SignerConfig.from_source`), with
the secrets a front end supplies added there and never stored here.

A `KeySource` holds the certificate and key references (a file path or a `pkcs11:` URI; a
`pin-value` in a URI is left to the cache key's rule, which drops it), the intermediates, the
module, the `--cert-selector` as given and parsed, and the switches (latest-expiring, the
token's chain, reuse-PIN, no TPM key password). It is frozen and cheap (a `Record`, no
dataclass): the cache key of a `CredentialSpec` reads it.
"""

from __future__ import annotations

from rolesanywhere_hsm.cachekey import KEY_FIELDS, key_fields
from rolesanywhere_hsm.record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a cache hit
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

__all__ = ["KEY_FIELDS", "KeySource", "check_selector_pairing", "key_fields"]


def check_selector_pairing(certificate: str | None, private_key: str | None, selector: Any) -> None:
    """A selector without a certificate searches the tokens; a key file cannot go with that."""
    if selector is not None and not certificate and private_key and private_key[:7].lower() != "pkcs11:":
        from rolesanywhere_hsm.errors import UsageError

        raise UsageError(
            "--cert-selector without --certificate searches the tokens, but --private-key is a file.",
            hint="Give --certificate (the file holding the certificates to pick among) with the key file.",
        )


class KeySource(Record):
    """Where the key and its certificate are, and how to pick them; no secrets.

    `cert_selector` is the `--cert-selector` as given (text, or an already parsed selector);
    `selector` is it parsed (None without one). Built once per credential source; checked in
    the constructor (a selector that does not parse, a selector with a key file and no
    certificate) before any token or file is opened.
    """

    _compared = KEY_FIELDS
    __slots__ = (*KEY_FIELDS, "selector")

    certificate: str | None
    private_key: str | None
    intermediates: str | None
    pkcs11_lib: str | None
    reuse_pin: bool
    no_tpm_key_password: bool
    cert_selector: Any
    use_latest_expiring_certificate: bool
    token_chain: bool
    selector: Any

    def __init__(self, certificate: str | None = None, private_key: str | None = None,
                 intermediates: str | None = None, pkcs11_lib: str | None = None, *,
                 reuse_pin: bool = False, no_tpm_key_password: bool = False,
                 cert_selector: Any = None, use_latest_expiring_certificate: bool = False,
                 token_chain: bool = True) -> None:
        self._set(certificate=certificate, private_key=private_key, intermediates=intermediates,
                  pkcs11_lib=pkcs11_lib, reuse_pin=reuse_pin, no_tpm_key_password=no_tpm_key_password,
                  cert_selector=cert_selector,
                  use_latest_expiring_certificate=use_latest_expiring_certificate,
                  token_chain=token_chain)
        selector = cert_selector
        if isinstance(selector, str):
            if selector:
                from rolesanywhere_hsm.certselector import parse_cert_selector

                selector = parse_cert_selector(selector)
            else:
                selector = None
        object.__setattr__(self, "selector", selector)
        check_selector_pairing(certificate, private_key, selector)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> KeySource:
        """The key source resolved options describe (errors name their setting)."""
        return cls(**key_fields(settings))

    @classmethod
    def from_config(cls, config: Any) -> KeySource:
        """The key source of a `SignerConfig` given to the library (its secrets left behind)."""
        return cls(config.certificate, config.private_key, config.intermediates, config.pkcs11_lib,
                   reuse_pin=config.reuse_pin, no_tpm_key_password=config.no_tpm_key_password,
                   cert_selector=config.cert_selector,
                   use_latest_expiring_certificate=config.use_latest_expiring_certificate,
                   token_chain=config.token_chain)

    @classmethod
    def key_file(cls, path: str) -> KeySource:
        """A key file alone (provisioning, attestation): no certificate yet."""
        return cls(None, path)

    def fields(self) -> dict[str, Any]:
        """The keywords CredentialSpec and the cache key take for the key (KEY_FIELDS)."""
        return {name: getattr(self, name) for name in KEY_FIELDS}

    @property
    def on_token(self) -> bool:
        """Whether the certificate or the key is named by a `pkcs11:` URI, or a selector alone
        searches the tokens."""
        refs = (self.certificate or "", self.private_key or "")
        if any(ref[:7].lower() == "pkcs11:" for ref in refs):
            return True
        return not self.certificate and not self.private_key and self.selector is not None

    def __repr__(self) -> str:  # never a pin-value, even in a traceback
        from rolesanywhere_hsm.redact import redact_optional

        return (f"KeySource(certificate={redact_optional(self.certificate)!r}, "
                f"private_key={redact_optional(self.private_key)!r}, "
                f"intermediates={redact_optional(self.intermediates)!r}, "
                f"pkcs11_lib={redact_optional(self.pkcs11_lib)!r}, "
                f"cert_selector={self.cert_selector is not None}, reuse_pin={self.reuse_pin!r})")
