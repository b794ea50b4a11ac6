"""The Signer protocol that hides where a private key lives, and the registry that picks one.

The request code only ever asks a signer for the leaf certificate, the chain, the algorithm
name and a signature; a file signer and a PKCS#11 signer answer the same way. Signers are
long-lived (the credential servers keep one open for hours), so they are context managers
and `close()` must release every resource (token sessions, module handles).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from rolesanywhere_hsm.errors import UsageError

__all__ = [
    "ALGORITHM_ECDSA",
    "ALGORITHM_RSA",
    "CertifiedKeySigner",
    "SecretCallback",
    "Signer",
    "SignerConfig",
    "load_signer",
    "register_signer",
    "signer_kind",
]

# docs/protocol.md section 3: the algorithm depends on the key type only.
ALGORITHM_RSA = "AWS4-X509-RSA-SHA256"
ALGORITHM_ECDSA = "AWS4-X509-ECDSA-SHA256"

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
        """`AWS4-X509-RSA-SHA256` or `AWS4-X509-ECDSA-SHA256`."""
        ...

    def sign(self, message: bytes) -> bytes:
        """Sign `message` with SHA-256 as digest; return the signature in wire encoding
        (PKCS#1 v1.5 bytes for RSA, DER SEQUENCE{r, s} for ECDSA)."""
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

    def sign(self, message: bytes) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Signer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class SignerConfig:
    """What the user said about the key: paths or `pkcs11:` URIs and how to unlock them.

    `pkcs8_password` is only here because the official helper takes it as a flag; prefer
    leaving it out and letting `secret_callback` ask for it when it is needed.
    """

    certificate: str
    private_key: str | None = None
    intermediates: str | None = None
    pkcs8_password: str | None = None
    pkcs11_lib: str | None = None
    reuse_pin: bool = False
    secret_callback: SecretCallback | None = None
    # A certificate on a token: send its issuer path from the token's CA certificates when
    # no `intermediates` are given (docs/pkcs11.md, "Chain"). Off: send no chain.
    token_chain: bool = True

    def __repr__(self) -> str:  # never show a password or a pin-value, even in a traceback
        return (
            f"SignerConfig(certificate={_redacted(self.certificate)!r}, "
            f"private_key={_redacted(self.private_key)!r}, "
            f"intermediates={self.intermediates!r}, pkcs11_lib={self.pkcs11_lib!r}, "
            f"reuse_pin={self.reuse_pin!r})"
        )


def _redacted(ref: str | None) -> str | None:
    """A key or certificate reference fit for a message: a pkcs11: URI loses its pin-value."""
    if ref is None or not ref[:7].lower() == "pkcs11:":
        return ref
    from rolesanywhere_hsm.errors import Pkcs11UriError
    from rolesanywhere_hsm.signers.pkcs11_uri import parse_pkcs11_uri

    try:
        return str(parse_pkcs11_uri(ref))
    except Pkcs11UriError:
        return "pkcs11:<malformed URI>"


SignerFactory = Callable[[SignerConfig], Signer]

# Kind -> factory, or "module:function" imported on first use so that a file-key run never
# imports pkcs11 and a token run never imports the PKCS#12 code.
_REGISTRY: dict[str, SignerFactory | str] = {
    "file": "rolesanywhere_hsm.signers.file:open_file_signer",
    "pkcs11": "rolesanywhere_hsm.signers.pkcs11:open_pkcs11_signer",
}


def register_signer(kind: str, factory: SignerFactory | str) -> None:
    """Add or replace the signer for `kind` (a URI scheme, e.g. "pkcs11")."""
    _REGISTRY[kind] = factory


def signer_kind(config: SignerConfig) -> str:
    """The registry key for a config: the URI scheme of the key (or certificate), else "file"."""
    for ref in (config.private_key, config.certificate):
        if ref and ":" in ref:
            scheme = ref.split(":", 1)[0].lower()
            if scheme in _REGISTRY:
                return scheme
    return "file"


def load_signer(config: SignerConfig) -> Signer:
    """Open the signer that `config` names. The caller closes it (use `with`)."""
    kind = signer_kind(config)
    factory = _REGISTRY[kind]
    if isinstance(factory, str):
        module_name, _, attr = factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise UsageError(
                f"The {kind} signer is not available: {exc}",
                hint="Reinstall rolesanywhere-hsm with its dependencies.",
            ) from exc
        _REGISTRY[kind] = factory
    return factory(config)
