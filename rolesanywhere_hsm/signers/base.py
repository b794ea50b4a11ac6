"""The Signer protocol that hides where a private key lives, and the registry that picks one.

The request code only ever asks a signer for the leaf certificate, the chain, the algorithm
name and a signature; a file signer and a PKCS#11 signer answer the same way. Signers are
long-lived (the credential servers keep one open for hours), so they are context managers
and `close()` must release every resource (token sessions, module handles).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from rolesanywhere_hsm.errors import UsageError
from rolesanywhere_hsm.keysource import KeySource
from rolesanywhere_hsm.record import Record
from rolesanywhere_hsm.redact import redact_optional
from rolesanywhere_hsm.signers.locate import Located
if TYPE_CHECKING:
    from rolesanywhere_hsm.signers.secretpolicy import SecretPolicy
# Re-exported: the algorithm names belong to the protocol (sigv4x509); older code imports them here.
from rolesanywhere_hsm.sigv4x509 import ALGORITHM_ECDSA, ALGORITHM_MLDSA, ALGORITHM_RSA

__all__ = [
    "ALGORITHM_ECDSA",
    "ALGORITHM_MLDSA",
    "ALGORITHM_RSA",
    "CertifiedKeySigner",
    "SecretCallback",
    "Signer",
    "SignerConfig",
    "load_signer",
    "locate",
    "register_signer",
    "signer_kind",
]

SecretCallback = Callable[[str], str]
"""Asked for a secret at the moment it is needed, with a description for the person
("PIN for token 'ci'"); returns it. Secrets are never stored in config objects."""


@runtime_checkable
class Signer(Protocol):
    """Signs CreateSession requests with one certificate's private key."""

    @property
    def certificate(self) -> bytes:
        """The leaf certificate, DER."""
        ...

    @property
    def chain(self) -> tuple[bytes, ...]:
        """Intermediate certificates, DER, nearest the leaf first; the leaf is not included."""
        ...

    @property
    def algorithm(self) -> str:
        """`AWS4-X509-RSA-SHA256`, `AWS4-X509-ECDSA-SHA256` or `AWS4-X509-MLDSA`."""
        ...

    def sign(self, message: bytes) -> bytes:
        """Sign `message` with SHA-256 as digest; return the signature in wire encoding
        (PKCS#1 v1.5 bytes for RSA, DER SEQUENCE{r, s} for ECDSA; pure ML-DSA over the message
        itself, empty context)."""
        ...

    def close(self) -> None:
        """Release the key store; idempotent."""
        ...

    def __enter__(self) -> Signer: ...

    def __exit__(self, *exc: object) -> None: ...


class CertifiedKeySigner:
    """What every signer shares: the certificate it signs for and the context-manager
    plumbing. Subclasses implement `sign()` and `close()`; the protocol stays the contract."""

    def __init__(self, certificate: bytes, chain: tuple[bytes, ...], algorithm: str) -> None:
        self._certificate = certificate
        self._chain = chain
        self._algorithm = algorithm

    @property
    def certificate(self) -> bytes:
        return self._certificate

    @property
    def chain(self) -> tuple[bytes, ...]:
        return self._chain

    @property
    def algorithm(self) -> str:
        return self._algorithm

    def replace_certificate(self, certificate: bytes, chain: tuple[bytes, ...]) -> None:
        """Sign for a renewed certificate of the same key from now on (rotation without
        restart). Refused unless its public key is the current certificate's, which was
        checked against the key when the signer opened: no signature is spent on the check."""
        from rolesanywhere_hsm.signers.acceptance import raise_first, renewal_findings
        from rolesanywhere_hsm.x509 import certificate_info

        raise_first(renewal_findings(certificate_info(self._certificate), certificate_info(certificate)))
        self._certificate, self._chain = certificate, chain

    def sign(self, message: bytes) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Signer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SignerConfig(Record):
    """What the user said about the key: paths or `pkcs11:` URIs and how to unlock them.

    `pkcs8_password` is only here because the official helper takes it as a flag; prefer
    leaving it out and letting `secret_callback` ask for it when it is needed.
    """

    __slots__ = ("certificate", "private_key", "intermediates", "pkcs8_password", "pkcs11_lib",
                 "reuse_pin", "tpm_key_password", "no_tpm_key_password", "secret_callback",
                 "cert_selector", "use_latest_expiring_certificate", "token_chain", "check_dates")
    _compared = __slots__
    certificate: str | None
    private_key: str | None
    intermediates: str | None
    pkcs8_password: str | None
    pkcs11_lib: str | None
    reuse_pin: bool
    tpm_key_password: str | None
    no_tpm_key_password: bool
    secret_callback: SecretCallback | None
    # --cert-selector (a certselector.CertSelector) and --use-latest-expiring-certificate: pick
    # the leaf among the certificates of the file, of the tokens a pkcs11: certificate URI
    # allows, or (no certificate given) of every token of the module(s).
    cert_selector: Any
    use_latest_expiring_certificate: bool
    # A certificate on a token: send its issuer path from the token's CA certificates when
    # no `intermediates` are given (docs/pkcs11.md, "Chain"). Off: send no chain.
    token_chain: bool
    # Refuse a certificate outside its validity at load, before any PIN (the service would
    # refuse it as "Untrusted signing certificate"). Off only for `doctor`, which checks the
    # dates itself and still wants to know whether the key signs.
    check_dates: bool

    def __init__(self, certificate: str | None, private_key: str | None = None,
                 intermediates: str | None = None, pkcs8_password: str | None = None,
                 pkcs11_lib: str | None = None, reuse_pin: bool = False, tpm_key_password: str | None = None,
                 no_tpm_key_password: bool = False, secret_callback: SecretCallback | None = None,
                 cert_selector: Any = None, use_latest_expiring_certificate: bool = False,
                 token_chain: bool = True, check_dates: bool = True) -> None:
        self._set(certificate=certificate, private_key=private_key, intermediates=intermediates,
                  pkcs8_password=pkcs8_password, pkcs11_lib=pkcs11_lib, reuse_pin=reuse_pin,
                  tpm_key_password=tpm_key_password, no_tpm_key_password=no_tpm_key_password,
                  secret_callback=secret_callback, cert_selector=cert_selector,
                  use_latest_expiring_certificate=use_latest_expiring_certificate, token_chain=token_chain,
                  check_dates=check_dates)
        self.__post_init__()

    def __post_init__(self) -> None:
        from rolesanywhere_hsm.keysource import check_selector_pairing

        check_selector_pairing(self.certificate, self.private_key, self.cert_selector)

    @classmethod
    def from_source(cls, source: KeySource, secret_callback: SecretCallback | None = None, *,
                    pkcs8_password: str | None = None, tpm_key_password: str | None = None,
                    check_dates: bool = True) -> SignerConfig:
        """The one place a key source becomes signer settings: the source's references and
        switches, with the secrets the front end supplies (never stored in the source)."""
        return cls(
            certificate=source.certificate, private_key=source.private_key,
            intermediates=source.intermediates, pkcs8_password=pkcs8_password,
            pkcs11_lib=source.pkcs11_lib, reuse_pin=source.reuse_pin,
            tpm_key_password=tpm_key_password, no_tpm_key_password=source.no_tpm_key_password,
            secret_callback=secret_callback, cert_selector=source.selector,
            use_latest_expiring_certificate=source.use_latest_expiring_certificate,
            token_chain=source.token_chain, check_dates=check_dates,
        )

    def __repr__(self) -> str:  # never show a password or a pin-value, even in a traceback
        return (
            f"SignerConfig(certificate={redact_optional(self.certificate)!r}, "
            f"private_key={redact_optional(self.private_key)!r}, "
            f"intermediates={redact_optional(self.intermediates)!r}, "
            f"pkcs11_lib={redact_optional(self.pkcs11_lib)!r}, "
            f"pkcs8_password={'<hidden>' if self.pkcs8_password is not None else None}, "
            f"reuse_pin={self.reuse_pin!r})"
        )


SignerFactory = Callable[[SignerConfig], Signer]

# Kind -> factory, or "module:function" imported on first use so that a file-key run never
# imports pkcs11 and a token run never imports the PKCS#12 code.
_REGISTRY: dict[str, SignerFactory | str] = {
    "file": "rolesanywhere_hsm.signers.file:open_file_signer",
    "pkcs11": "rolesanywhere_hsm.signers.pkcs11:open_pkcs11_signer",
    "tpmkey": "rolesanywhere_hsm.signers.tpmkey:open_tpmkey_signer",
}


_REPLACED: set[str] = set()  # kinds whose built-in signer register_signer replaced


def register_signer(kind: str, factory: SignerFactory | str) -> None:
    """Add or replace the signer for `kind` (a URI scheme, e.g. "pkcs11")."""
    _REPLACED.add(kind)
    _REGISTRY[kind] = factory


def signer_kind(config: SignerConfig) -> str:
    """The registry key for a config: the URI scheme of the key (or certificate), "tpmkey" for
    a key file in the TSS2 PEM format (sniffed from its first bytes), else "file"."""
    for ref in (config.private_key, config.certificate):
        if ref and ":" in ref:
            scheme = ref.split(":", 1)[0].lower()
            if scheme in _REGISTRY:
                return scheme
    if not config.certificate and config.cert_selector is not None and not config.private_key:
        return "pkcs11"  # --cert-selector alone searches the tokens
    if config.private_key and _is_tss2_key_file(config.private_key):
        return "tpmkey"
    return "file"


def _is_tss2_key_file(path: str) -> bool:
    from rolesanywhere_hsm.signers.keyformat import is_tss2_key_file  # no TSS import: a bounded read

    return is_tss2_key_file(path)


# Kind -> its locator (rolesanywhere_hsm.signers.locate: the first, secret-free phase), by name.
_LOCATORS: dict[str, str] = {
    "file": "rolesanywhere_hsm.signers.file:locate_file",
    "pkcs11": "rolesanywhere_hsm.signers.pkcs11.opening:locate_pkcs11",
    "tpmkey": "rolesanywhere_hsm.signers.tpmkey:locate_tpmkey",
}


def locate(config: SignerConfig, **options: Any) -> Located:
    """The key `config` names, found without a secret or a login: a `Located` whose findings
    say what is wrong and whose `unlock()` is the one step that asks for a secret. Only the
    built-in kinds have a locator (a registered signer is opened whole by `load_signer`).
    `options` go to the kind's locator (PKCS#11: `environ`, `prompt`, a forced `spec`)."""
    kind = signer_kind(config)
    if kind not in _LOCATORS or kind in _REPLACED:
        raise UsageError(f"The {kind} signer is registered without a locator.",
                         hint="Open it with load_signer().")
    return _imported(kind, _LOCATORS[kind])(config, **options)


def load_signer(config: SignerConfig, policy: SecretPolicy | None = None) -> Signer:
    """Open the signer that `config` names. The caller closes it (use `with`).

    `policy` (a `SecretPolicy`) is how its secret may be found; without one, the config's
    `secret_callback`, then the terminal. A signer registered without a locator gets the
    policy's callback and prompt as its `secret_callback`."""
    kind = signer_kind(config)
    if policy is not None:
        if kind in _LOCATORS and kind not in _REPLACED:
            return locate(config).unlock(policy)
        from rolesanywhere_hsm.signers.secretpolicy import TOKEN_PIN

        config = config._replace(secret_callback=policy.with_callback(
            config.secret_callback).as_callback(TOKEN_PIN))
    factory = _REGISTRY[kind]
    if isinstance(factory, str):
        factory = _REGISTRY[kind] = _imported(kind, factory)
    return factory(config)


def _imported(kind: str, reference: str) -> Any:
    """The function a "module:function" registry entry names, imported on first use."""
    module_name, _, attr = reference.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError(
            f"The {kind} signer is not available: {exc}",
            hint="Reinstall rolesanywhere-hsm with its dependencies.",
        ) from exc
