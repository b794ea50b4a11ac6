"""Keys in files: PEM or DER PKCS#8 / PKCS#1 / SEC1, encrypted PKCS#8, and PKCS#12 bundles.

RSA, EC and ML-DSA (44/65/87, PKCS#8 only: cryptography reads ML-DSA keys in PKCS#8, encrypted
or not, and in PKCS#12 where its PKCS#12 reader accepts them).

For users without a token, and for tests that compare the token path against a plain key.
Loading refuses a key that does not belong to the certificate, because the alternative is an
`Invalid signature` from the service that says nothing about the cause.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from rolesanywhere_hsm import x509 as x509util
from rolesanywhere_hsm.errors import CertificateError, KeyLoadError, RolesAnywhereError, UsageError
from rolesanywhere_hsm.signers.acceptance import KeyFacts, raise_first
from rolesanywhere_hsm.signers.acceptance import check as acceptance_check
from rolesanywhere_hsm.signers.base import CertifiedKeySigner, SignerConfig
from rolesanywhere_hsm.signers.locate import Located

if TYPE_CHECKING:
    from rolesanywhere_hsm.signers.secretpolicy import SecretPolicy

__all__ = ["DIGESTS", "FileSigner", "load_key_only", "open_file_signer", "signing_function"]

# sign-string's --digest values; CreateSession itself always uses SHA-256 (or none, for ML-DSA).
DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA256": hashes.SHA256,
    "SHA384": hashes.SHA384,
    "SHA512": hashes.SHA512,
}
_MLDSA_KEYS = (mldsa.MLDSA44PrivateKey, mldsa.MLDSA65PrivateKey, mldsa.MLDSA87PrivateKey)


def signing_function(key: Any, digest: str = "SHA256") -> Callable[[bytes], bytes]:
    """How `key` signs a message in Roles Anywhere's wire encoding: RSA PKCS#1 v1.5 and ECDSA
    (DER) over `digest`; ML-DSA is pure ML-DSA over the message itself, empty context, so
    `digest` does not apply to it."""
    if isinstance(key, rsa.RSAPrivateKey):
        algorithm = DIGESTS[digest]()
        return lambda m: key.sign(m, padding.PKCS1v15(), algorithm)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = DIGESTS[digest]()
        return lambda m: key.sign(m, ec.ECDSA(algorithm))
    if isinstance(key, _MLDSA_KEYS):
        return lambda m: key.sign(m)
    raise KeyLoadError(
        f"Roles Anywhere cannot use a {type(key).__name__.removeprefix('_')} key.",
        hint="Use an RSA, EC (P-256, P-384) or ML-DSA (44, 65, 87) key.",
    )


def _read(path: str, what: str, error: type[RolesAnywhereError] = KeyLoadError) -> bytes:
    from rolesanywhere_hsm.files import KEY_LIMIT, read_regular_file

    return read_regular_file(path, what=what, limit=KEY_LIMIT, error=error)


def _looks_pkcs12(data: bytes) -> bool:
    # A PFX is a DER SEQUENCE whose first element is INTEGER 3 (the version).
    if not data.startswith(b"\x30"):
        return False
    try:
        from asn1crypto import pkcs12 as _p12

        return _p12.Pfx.load(data)["version"].native == "v3"
    except Exception:
        return False


def _is_encrypted(data: bytes) -> bool:
    return b"ENCRYPTED PRIVATE KEY" in data or b"Proc-Type: 4,ENCRYPTED" in data


def _password(config: SignerConfig, path: str, policy: SecretPolicy | None) -> bytes:
    """The key file's password in `SecretPolicy`'s order (--pkcs8-password, then
    RAH_PKCS8_PASSWORD, the callback, the prompt if the front end allows one); asked once."""
    from rolesanywhere_hsm.signers.secretpolicy import PKCS8_PASSWORD, SecretPolicy, SecretRequest

    # without a policy from the front end: the config's callback, then the terminal
    policy = SecretPolicy.terminal(config.secret_callback) if policy is None else policy
    password, _source = policy.resolve(SecretRequest(PKCS8_PASSWORD, f"Password for {path}",
                                                     explicit=config.pkcs8_password, subject=path))
    assert isinstance(password, str)
    return password.encode()


def _load_private_key(data: bytes, password: bytes | None, path: str) -> Any:
    loaders = (
        (serialization.load_pem_private_key,)
        if data.lstrip().startswith(b"-----BEGIN")
        else (serialization.load_der_private_key,)
    )
    for load in loaders:
        try:
            return load(data, password=password)
        except TypeError as exc:  # password given for a clear key or missing for an encrypted one
            raise KeyLoadError(f"Cannot load the private key {path}: {exc}.") from None
        except ValueError:
            if password is not None:
                raise KeyLoadError(
                    f"Cannot decrypt the private key {path}: wrong password or unsupported encryption.",
                    hint="Check --pkcs8-password; the password was tried once.",
                ) from None
    raise KeyLoadError(
        f"{path} is not a private key this tool can read.",
        hint="Use PEM or DER PKCS#8 (RSA, EC, ML-DSA), PKCS#1 (RSA) or SEC1 (EC), or a PKCS#12 file.",
    )


def _spki(key: Any) -> bytes:
    """The key's SubjectPublicKeyInfo, DER: what the acceptance rules compare."""
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


class FileSigner(CertifiedKeySigner):
    """A Signer over a private key held in memory by `cryptography`."""

    def __init__(self, key: Any, certificate: bytes, chain: tuple[bytes, ...], *,
                 check_dates: bool = True) -> None:
        info = x509util.certificate_info(certificate)
        raise_first(acceptance_check(info, KeyFacts("file", spki=_spki(key)), dates=check_dates))
        self._sign = signing_function(key)
        self._key: Any = key
        super().__init__(certificate, chain, info.algorithm)
        self._closed = False

    def sign(self, message: bytes) -> bytes:
        if self._closed:
            raise UsageError("The signer is closed.")
        return self._sign(message)

    def sign_with_digest(self, message: bytes, digest: str) -> bytes:
        """`sign()` with another hash (SHA256, SHA384, SHA512), for `sign-string --digest`."""
        if self._closed:
            raise UsageError("The signer is closed.")
        return signing_function(self._key, digest)(message)

    def close(self) -> None:
        self._closed = True
        self._sign = None  # type: ignore[assignment]  # drop the key reference
        self._key = None

    def __repr__(self) -> str:
        return f"FileSigner(algorithm={self._algorithm!r}, chain={len(self._chain)})"


def _from_pkcs12(data: bytes, config: SignerConfig, path: str,
                 policy: SecretPolicy | None = None) -> tuple[Any, bytes, list[bytes]]:
    from cryptography.hazmat.primitives.serialization import Encoding

    def attempt(password: bytes | None) -> Any:
        return pkcs12.load_pkcs12(data, password)

    try:
        bundle = attempt(None if config.pkcs8_password is None else config.pkcs8_password.encode())
    except ValueError:
        if config.pkcs8_password is not None:
            raise KeyLoadError(
                f"Cannot open the PKCS#12 file {path}: wrong password.",
                hint="Check --pkcs8-password; the password was tried once.",
            ) from None
        try:
            bundle = attempt(_password(config, path, policy))
        except ValueError:
            raise KeyLoadError(f"Cannot open the PKCS#12 file {path}: wrong password.") from None
    if bundle.key is None or bundle.cert is None:
        raise KeyLoadError(f"The PKCS#12 file {path} must hold a private key and its certificate.")
    extra = [c.certificate.public_bytes(Encoding.DER) for c in bundle.additional_certs]
    return bundle.key, bundle.cert.certificate.public_bytes(Encoding.DER), extra


class LocatedKeyFile(Located):
    """A key file and its certificate as `locate_file` found them: the leaf picked, the chain
    ordered, the acceptance rules run; the key read but not decrypted. A PKCS#12 file given as
    --certificate holds its leaf under its password: that leaf is checked at unlock."""

    kind = "file"

    def __init__(self, config: SignerConfig) -> None:
        super().__init__()
        self.config = config
        self._pkcs12: tuple[bytes, str] | None = None  # (data, path) of a bundle to open at unlock
        self._key_data: bytes | None = None
        self._key: Any = None  # a clear key, read at locate
        self._extra: list[bytes] = []

    def unlock(self, policy: SecretPolicy | None = None) -> FileSigner:
        """Decrypt the key (its password asked at most once, here, through `policy`) and pair
        it with the leaf."""
        self.require()
        config = self.config
        if self._pkcs12 is not None:
            data, path = self._pkcs12
            key, leaf, extra = _from_pkcs12(data, config, path, policy)
            if self.certificate is None:  # the bundle is the certificate
                leaf = _pick_leaf([leaf], config)[0]  # a selector that does not match it is an error
                extra = extra + (x509util.load_certificates(config.intermediates) if config.intermediates else [])
                chain = x509util.order_chain(leaf, extra) if extra else ()
                return FileSigner(key, leaf, chain, check_dates=config.check_dates)
            if extra:  # a PKCS#12 key file's own certificates are candidates for the chain too
                assert self.certificate is not None
                chain = x509util.order_chain(self.certificate, extra + self._extra)
                return FileSigner(key, self.certificate, chain, check_dates=config.check_dates)
        else:
            assert self._key_data is not None and config.private_key is not None
            key = self._key
            if key is None:  # encrypted: its password is asked here, once
                password = _password(config, config.private_key, policy)
                key = _load_private_key(self._key_data, password, config.private_key)
        assert self.certificate is not None
        return FileSigner(key, self.certificate, self.chain, check_dates=config.check_dates)


def locate_file(config: SignerConfig) -> LocatedKeyFile:
    """Read the certificate and key files without decrypting anything (see signers.locate)."""
    located = LocatedKeyFile(config)
    try:
        cert_data = _read(config.certificate, "certificate", CertificateError)
    except RolesAnywhereError as exc:
        located.found(exc, "certificate")
        return located
    if _looks_pkcs12(cert_data) and not config.private_key:
        located._pkcs12 = (cert_data, config.certificate)
        located.secret_source = "--pkcs8-password, a callback or the terminal"
        return located
    try:
        if not config.private_key:
            raise UsageError(
                "--private-key is required with a certificate file.",
                hint="Pass the key file (or a pkcs11: URI), or give a PKCS#12 file as --certificate.",
            )
        key_data = _read(config.private_key, "private key")
    except RolesAnywhereError as exc:
        located.found(exc, "private-key")
        return located
    if _looks_pkcs12(key_data):
        located._pkcs12 = (key_data, config.private_key)
    else:
        located._key_data = key_data
        if not _is_encrypted(key_data):  # a clear key needs no secret: read it now
            try:
                located._key = _load_private_key(key_data, None, config.private_key)
            except RolesAnywhereError as exc:
                located.found(exc, "private-key")
                return located
    if located._pkcs12 is not None or _is_encrypted(key_data):
        located.secret_source = "--pkcs8-password, a callback or the terminal"
    try:
        leaf, rest = _pick_leaf(x509util.parse_certificates(cert_data, source=config.certificate), config)
    except RolesAnywhereError as exc:
        located.found(exc, "cert-selector" if config.cert_selector is not None else "certificate")
        return located
    located.certificate = leaf
    try:
        info = x509util.certificate_info(leaf)
    except RolesAnywhereError as exc:
        located.found(exc, "certificate")
    else:  # a clear key is paired here; an encrypted one at unlock, once decrypted
        key = KeyFacts("file", spki=_spki(located._key)) if located._key is not None else None
        located.findings += acceptance_check(info, key, dates=config.check_dates)
    try:
        located._extra = rest + (x509util.load_certificates(config.intermediates) if config.intermediates else [])
        located.chain = x509util.order_chain(leaf, located._extra) if located._extra else ()
    except RolesAnywhereError as exc:
        located.found(exc, "intermediates")
    return located


def open_file_signer(config: SignerConfig) -> FileSigner:
    """Load a key and certificate from files, as `--certificate/--private-key/--intermediates`:
    `locate_file`, its first finding raised, then `unlock` (the key's password, if any)."""
    return locate_file(config).unlock()


def _pick_leaf(certificates: list[bytes], config: SignerConfig) -> tuple[bytes, list[bytes]]:
    """The first certificate of the file is the leaf, unless --cert-selector picks another
    (the others stay candidates for the chain)."""
    if config.cert_selector is None:
        return certificates[0], certificates[1:]
    from rolesanywhere_hsm.certselector import candidate_from_der, select_certificate

    index = select_certificate(
        [candidate_from_der(c) for c in certificates],
        config.cert_selector,
        use_latest_expiring=config.use_latest_expiring_certificate,
        where=str(config.certificate),
    )
    return certificates[index], certificates[:index] + certificates[index + 1 :]


def load_key_only(config: SignerConfig, policy: SecretPolicy | None = None) -> Any:
    """The private key of `config.private_key` without a certificate: `sign-string
    --private-key FILE` signs with a key alone, as the official helper does."""
    path = config.private_key or config.certificate
    key_data = _read(path, "private key")
    if _looks_pkcs12(key_data):
        return _from_pkcs12(key_data, config, path, policy)[0]
    password = _password(config, path, policy) if _is_encrypted(key_data) else None
    return _load_private_key(key_data, password, path)
