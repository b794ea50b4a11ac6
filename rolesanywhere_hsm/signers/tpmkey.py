"""TPM key files: keys in the TSS2 PEM format, signed with by the TPM itself (not through PKCS#11).

A `-----BEGIN TSS2 PRIVATE KEY-----` file (written by tpm2-openssl, tpm2-tss-engine,
tpm2-pytss) holds the key's public area and its private part encrypted under a parent key in
one TPM; only that TPM can load and use it. We open the TPM through tpm2-pytss (the TSS
project's ESAPI binding, the `[tpm]` extra), re-create the parent the way those tools do, load
the key, and sign SHA-256 digests with TPM2_Sign.

Decisions, and why:

- The TPM is reached through the TCTI named by `RAH_TPM_TCTI`, else `TPM2TOOLS_TCTI`, else
  `TCTI`, else the TSS default (tabrmd, then /dev/tpmrm0, /dev/tpm0): the same strings as
  tpm2-tools (`device:/dev/tpmrm0`, `swtpm:path=/run/swtpm.sock`, `tabrmd:`).
- Parent 0x40000001 (the owner hierarchy) means "the standard storage primary", which
  tpm2-openssl and tpm2-tss-engine create on every use from a fixed template: ECC P-256 when
  the TPM has ECC, else RSA-2048; restricted decrypt, AES-128-CFB, noDA, empty unique, empty
  owner password. Any other template gives another primary and the key would not load, so the
  two templates below must stay byte-for-byte those. A persistent parent (0x81xxxxxx) is used
  as it is, with an empty password.
- The key's password (its authValue) comes from `--tpm-key-password`, else
  `RAH_TPM_KEY_PASSWORD`, else the caller's callback, else the terminal prompt; a key whose file
  says `emptyAuth` (or `--no-tpm-key-password`) uses none. The TPM checks it at the first
  signature; a refusal is final for this signer (`PinIncorrectError`, exit 5) and the password
  is never sent again, because each wrong try counts toward the TPM's dictionary-attack lockout
  (except for keys made with noDA).
- The certificate must carry the key's public key; this is checked from the file before the
  TPM is touched (`KeyLoadError`, exit 3), as for key files.
- Unrestricted keys sign a digest computed here with a null ticket; a restricted signing key
  needs the TPM to hash the message itself (TPM2_Hash, or a hash sequence beyond 1 KiB) and
  to see the ticket that proves it, which is done for it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rolesanywhere_hsm import x509 as x509util
from rolesanywhere_hsm.errors import (
    KeyLoadError,
    PinIncorrectError,
    PinLockedError,
    TokenError,
    TokenSigningError,
    UsageError,
)
from rolesanywhere_hsm.files import CERTIFICATE_LIMIT, read_regular_file
from rolesanywhere_hsm.signers.base import CertifiedKeySigner, SignerConfig
from rolesanywhere_hsm.signers.locate import Located
from rolesanywhere_hsm.signers.keyformat import TSS2_PEM_BEGIN, is_tss2_key_file

if TYPE_CHECKING:
    from rolesanywhere_hsm.signers.secretpolicy import SecretPolicy

__all__ = [
    "PASSWORD_ENV_VAR",
    "TCTI_ENV_VARS",
    "TSS2_PEM_BEGIN",
    "TpmKeySigner",
    "is_tss2_key_file",
    "key_password",
    "open_tpmkey_signer",
    "tcti_from_env",
    "tpm_error_kind",
]

log = logging.getLogger(__name__)

PASSWORD_ENV_VAR = "RAH_TPM_KEY_PASSWORD"
TCTI_ENV_VARS = ("RAH_TPM_TCTI", "TPM2TOOLS_TCTI", "TCTI")
# A TSS2 PEM key is under 2 KiB (RSA-4096: public 0.5 KiB, private 0.3 KiB, base64): a "key"
# larger than the cap is not one.
_MAX_KEY_FILE = 64 * 1024

_TPM2_RH_OWNER = 0x40000001
_PERSISTENT_FIRST, _PERSISTENT_LAST = 0x81000000, 0x81FFFFFF
_TPM2B_MAX_BUFFER = 1024
_MAX_AUTH_BYTES = 64  # sizeof(TPMU_HA): the largest TPM2B_AUTH  # the most TPM2_SequenceUpdate takes at once on every TPM

# TPM return codes (TPM 2.0 Part 2, 6.6), base values after removing handle/session/parameter.
_RC_AUTH_FAIL = 0x08E  # wrong authValue, counted by dictionary-attack protection
_RC_BAD_AUTH = 0x0A2  # wrong authValue on a noDA object (not counted)
_RC_INTEGRITY = 0x09F  # the private blob does not decrypt under this parent
_RC_LOCKOUT = 0x921  # dictionary-attack lockout in force


def tcti_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The TCTI configuration string the user asked for, or None for the TSS default."""
    environ = os.environ if environ is None else environ
    for name in TCTI_ENV_VARS:
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


def tpm_error_kind(rc: int) -> str:
    """Classify a TSS2 return code: "auth" (wrong key password, counted), "auth-noda" (wrong
    password, not counted), "lockout", "integrity" (wrong TPM or parent), "tss" (an error of
    the software stack, e.g. no TPM), or "other"."""
    if rc >> 16:  # a layer above the TPM (ESAPI, TCTI, ...)
        return "tss"
    base = (0x80 | (rc & 0x3F)) if rc & 0x80 else (rc & 0xFFF)
    return {
        _RC_AUTH_FAIL: "auth",
        _RC_BAD_AUTH: "auth-noda",
        _RC_LOCKOUT: "lockout",
        _RC_INTEGRITY: "integrity",
    }.get(base, "other")


def _import_tpm2_pytss() -> Any:
    try:
        import tpm2_pytss
    except ImportError as exc:
        raise UsageError(
            f"TPM key files need the tpm2-pytss package, which cannot be imported ({exc}).",
            hint="Install it: pip install tpm2-pytss, what the [tpm] extra installs (needs libtss2-dev, pkg-config "
            "and a C compiler: apt-get install libtss2-dev pkg-config gcc).",
        ) from None
    return tpm2_pytss


def _primary_template(ecc: bool) -> Any:
    """The storage primary that tpm2-openssl and tpm2-tss-engine create under the owner
    hierarchy for keys whose parent is 0x40000001 (see the module docstring)."""
    from tpm2_pytss.constants import TPM2_ALG, TPM2_ECC, TPMA_OBJECT
    from tpm2_pytss.types import (
        TPM2B_PUBLIC,
        TPMS_ECC_PARMS,
        TPMS_RSA_PARMS,
        TPMT_ECC_SCHEME,
        TPMT_KDF_SCHEME,
        TPMT_PUBLIC,
        TPMT_RSA_SCHEME,
        TPMT_SYM_DEF_OBJECT,
        TPMU_PUBLIC_PARMS,
        TPMU_SYM_KEY_BITS,
        TPMU_SYM_MODE,
    )

    symmetric = TPMT_SYM_DEF_OBJECT(
        algorithm=TPM2_ALG.AES, keyBits=TPMU_SYM_KEY_BITS(aes=128), mode=TPMU_SYM_MODE(aes=TPM2_ALG.CFB)
    )
    if ecc:
        parameters = TPMU_PUBLIC_PARMS(eccDetail=TPMS_ECC_PARMS(
            symmetric=symmetric, scheme=TPMT_ECC_SCHEME(scheme=TPM2_ALG.NULL),
            curveID=TPM2_ECC.NIST_P256, kdf=TPMT_KDF_SCHEME(scheme=TPM2_ALG.NULL),
        ))
    else:
        parameters = TPMU_PUBLIC_PARMS(rsaDetail=TPMS_RSA_PARMS(
            symmetric=symmetric, scheme=TPMT_RSA_SCHEME(scheme=TPM2_ALG.NULL), keyBits=2048, exponent=0,
        ))
    return TPM2B_PUBLIC(publicArea=TPMT_PUBLIC(
        type=TPM2_ALG.ECC if ecc else TPM2_ALG.RSA,
        nameAlg=TPM2_ALG.SHA256,
        objectAttributes=TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT
        | TPMA_OBJECT.NODA | TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN,
        authPolicy=b"",
        parameters=parameters,
    ))


def _tpm_has_ecc(ectx: Any) -> bool:
    from tpm2_pytss.constants import TPM2_ALG, TPM2_CAP

    more, first = True, 0
    while more:
        more, data = ectx.get_capability(TPM2_CAP.ALGS, first, 128)
        algs = data.data.algorithms
        found = [algs.algProperties[i].alg for i in range(algs.count)]
        if TPM2_ALG.ECC in found:
            return True
        if not found:
            break
        first = int(found[-1]) + 1
    return False


class TpmKeySigner(CertifiedKeySigner):
    """A Signer over a key loaded in the TPM from a TSS2 PEM file. Holds one ESAPI context and
    one transient object until `close()`."""

    def __init__(
        self, ectx: Any, handle: Any, *, key_type: str, restricted: bool, path: str,
        certificate: bytes, chain: tuple[bytes, ...], algorithm: str,
    ) -> None:
        super().__init__(certificate, chain, algorithm)
        self._ectx = ectx
        self._handle = handle
        self._key_type = key_type  # "RSA" or "EC"
        self._restricted = restricted
        self._path = path
        self._refused: PinIncorrectError | PinLockedError | None = None
        self._lock = threading.Lock()  # one ESAPI context: one TPM command at a time

    def sign(self, message: bytes) -> bytes:
        with self._lock:
            return self._sign(message)

    def _sign(self, message: bytes) -> bytes:
        if self._ectx is None:
            raise UsageError("The signer is closed.")
        if self._refused is not None:  # the TPM said no once: never send the password again
            raise self._refused
        from tpm2_pytss import TSS2_Exception
        from tpm2_pytss.constants import TPM2_ALG
        from tpm2_pytss.types import TPMT_SIG_SCHEME

        scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.RSASSA if self._key_type == "RSA" else TPM2_ALG.ECDSA)
        scheme.details.any.hashAlg = TPM2_ALG.SHA256
        try:
            digest, ticket = self._digest(message)
            signature = self._ectx.sign(self._handle, digest, scheme, ticket)
        except TSS2_Exception as exc:
            raise self._signing_error(exc) from None
        if self._key_type == "RSA":
            return bytes(signature.signature.rsassa.sig)
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        ecdsa = signature.signature.ecdsa
        return encode_dss_signature(
            int.from_bytes(bytes(ecdsa.signatureR), "big"), int.from_bytes(bytes(ecdsa.signatureS), "big")
        )

    def _digest(self, message: bytes) -> tuple[bytes, Any]:
        """SHA-256 of `message` and the hash-check ticket TPM2_Sign wants: a null ticket for
        an unrestricted key, the TPM's own for a restricted one (it must hash the data)."""
        if not self._restricted:
            return hashlib.sha256(message).digest(), None
        from tpm2_pytss.constants import ESYS_TR, TPM2_ALG

        if len(message) <= _TPM2B_MAX_BUFFER:
            digest, ticket = self._ectx.hash(message, TPM2_ALG.SHA256, ESYS_TR.OWNER)
            return bytes(digest), ticket
        # Longer: a sequence. Its first update must carry data, or the TPM returns a null
        # ticket (it checks the leading bytes for TPM_GENERATED_VALUE there).
        sequence = self._ectx.hash_sequence_start(b"", TPM2_ALG.SHA256)
        chunks = [message[i:i + _TPM2B_MAX_BUFFER] for i in range(0, len(message), _TPM2B_MAX_BUFFER)]
        try:
            for chunk in chunks[:-1]:
                self._ectx.sequence_update(sequence, chunk)
            digest, ticket = self._ectx.sequence_complete(sequence, chunks[-1], hierarchy=ESYS_TR.OWNER)
        except BaseException:
            self._ectx.flush_context(sequence)
            raise
        return bytes(digest), ticket

    def _signing_error(self, exc: Any) -> Exception:
        kind = tpm_error_kind(int(exc.rc))
        if kind in ("auth", "auth-noda"):
            counted = (" It counts toward the TPM's dictionary-attack lockout."
                       if kind == "auth" else "")
            self._refused = PinIncorrectError(
                f"The TPM refused the password of the key {self._path} (it was tried once).{counted}",
                hint="Check --tpm-key-password or RAH_TPM_KEY_PASSWORD (use --no-tpm-key-password "
                "for a key without one).",
            )
            return self._refused
        if kind == "lockout":
            self._refused = _lockout_error()
            return self._refused
        return TokenSigningError(f"The TPM failed to sign with the key {self._path}: {exc}.")

    def close(self) -> None:
        with self._lock:
            ectx, self._ectx = self._ectx, None
        if ectx is None:
            return
        try:
            ectx.flush_context(self._handle)
        except Exception as exc:  # the TPM may be gone; the context must still be freed
            log.debug("flushing the TPM key failed: %s", exc)
        finally:
            ectx.close()

    def __repr__(self) -> str:
        return f"TpmKeySigner(algorithm={self._algorithm!r}, chain={len(self._chain)})"


def _lockout_error() -> PinLockedError:
    return PinLockedError(
        "The TPM is in dictionary-attack lockout: it refuses passwords for a while.",
        hint="Wait for the lockout to expire (TPM2_PT_LOCKOUT_RECOVERY), or clear it with "
        "tpm2_dictionarylockout --clear-lockout and the lockout password.",
    )


def _read_key(path: str) -> bytes:
    return read_regular_file(path, what="private key", limit=_MAX_KEY_FILE, error=KeyLoadError)


def _parse_key(data: bytes, path: str) -> Any:
    from tpm2_pytss.tsskey import TSSPrivKey

    start = data.find(TSS2_PEM_BEGIN)
    try:  # tpm2-pytss wants the armour at a line start and LF line ends
        return TSSPrivKey.from_pem(data[start:].replace(b"\r\n", b"\n"))
    except Exception as exc:  # ValueError, TypeError, asn1 and unmarshal errors alike
        raise KeyLoadError(f"{path} is not a valid TSS2 PEM key: {exc}.",
                           hint="Create it with tpm2-openssl, tpm2tss-genkey or tpm2-pytss.") from None


def _check_key(key: Any, path: str) -> tuple[str, bool]:
    """("RSA" | "EC", restricted) for a key that can sign what Roles Anywhere asks, else KeyLoadError."""
    from tpm2_pytss.constants import TPM2_ALG, TPMA_OBJECT

    area = key.public.publicArea
    attributes = int(area.objectAttributes)
    if area.type == TPM2_ALG.RSA:
        key_type, scheme = "RSA", area.parameters.rsaDetail.scheme
        allowed = (TPM2_ALG.NULL, TPM2_ALG.RSASSA)
    elif area.type == TPM2_ALG.ECC:
        key_type, scheme = "EC", area.parameters.eccDetail.scheme
        allowed = (TPM2_ALG.NULL, TPM2_ALG.ECDSA)
    else:
        raise KeyLoadError(f"The TPM key {path} is neither RSA nor EC.", hint="Use an RSA or EC key.")
    if not attributes & TPMA_OBJECT.SIGN_ENCRYPT:
        raise KeyLoadError(f"The TPM key {path} is not a signing key (no 'sign' attribute).",
                           hint="Create the key with the sign attribute.")
    if scheme.scheme not in allowed or (
        scheme.scheme != TPM2_ALG.NULL and scheme.details.anySig.hashAlg != TPM2_ALG.SHA256
    ):
        raise KeyLoadError(
            f"The TPM key {path} is bound to a signature scheme other than "
            f"{'RSASSA (PKCS#1 v1.5)' if key_type == 'RSA' else 'ECDSA'} with SHA-256.",
            hint="Roles Anywhere needs that scheme: create the key with a null scheme or that one.",
        )
    return key_type, bool(attributes & TPMA_OBJECT.RESTRICTED)


def key_password(key: Any, path: str, *, explicit: str | None = None, no_password: bool = False,
                 policy: SecretPolicy | None = None) -> bytes:
    """The authValue of the TPM key file `path` (parsed as `key`): none when the file says
    emptyAuth; else in `SecretPolicy`'s order (`explicit`, RAH_TPM_KEY_PASSWORD, the callback,
    the prompt if the front end allows one), asked once, never empty, at most 64 bytes. Also
    what provisioning and attestation use to authorise the key."""
    if explicit is not None and no_password:
        raise UsageError("--tpm-key-password and --no-tpm-key-password contradict each other.",
                         hint="Give one of them.")
    if key.empty_auth:
        if explicit is not None:
            log.debug("the TPM key file says emptyAuth: the given password is not used")
        return b""
    # From here on the file says the key has a password (emptyAuth false): an empty one cannot
    # be right, and sending it would spend one of the TPM's dictionary-attack tries (a few
    # wrong tries lock the TPM for every program), so it is refused before the TPM is touched.
    if no_password:
        raise UsageError(
            f"--no-tpm-key-password was given, but the TPM key file {path} says its key has a "
            "password (emptyAuth is false); nothing was sent to the TPM.",
            hint=f"Give the password in {PASSWORD_ENV_VAR} (or let the prompt ask) and leave "
            "--no-tpm-key-password out.")
    from rolesanywhere_hsm.signers.secretpolicy import TPM_KEY_PASSWORD, SecretPolicy, SecretRequest

    # An empty password is refused by the policy (TPM_KEY_PASSWORD guards a counter).
    policy = SecretPolicy.terminal() if policy is None else policy
    password, source = policy.resolve(SecretRequest(
        TPM_KEY_PASSWORD, f"Password for the TPM key {path}", explicit=explicit, subject=path))
    assert isinstance(password, str)
    return _checked(password, TPM_KEY_PASSWORD.source_words(source))


def _checked(password: str, source: str) -> bytes:
    """The password as the TPM takes it (UTF-8). A TPM authValue holds at most 64 bytes (a
    SHA-512 digest; 32 for the usual SHA-256 keys): a longer one is refused here rather than
    spent against the lockout counter."""
    data = password.encode()
    if len(data) > _MAX_AUTH_BYTES:
        raise PinIncorrectError(
            f"The TPM key password from {source} is {len(data)} bytes long; a TPM key password "
            f"has at most {_MAX_AUTH_BYTES} (it was not sent to the TPM).",
            hint="Check that the right secret is given.",
        )
    return data


def _connect(tcti: str | None) -> Any:
    from tpm2_pytss import ESAPI

    if not log.isEnabledFor(logging.DEBUG):  # the TSS logs every TPM error on stderr itself
        os.environ.setdefault("TSS2_LOG", "all+NONE")
    try:
        return ESAPI(tcti)
    except Exception as exc:
        where = f"TCTI {tcti!r}" if tcti else "the default TCTI (tabrmd, /dev/tpmrm0, /dev/tpm0)"
        raise TokenError(
            f"Cannot open the TPM through {where}: {exc}.",
            hint=f"Set {TCTI_ENV_VARS[0]} (or TPM2TOOLS_TCTI), e.g. device:/dev/tpmrm0 or "
            "swtpm:path=/path/to/socket, and check access to the device (group tss).",
        ) from None


def _load(ectx: Any, key: Any, path: str) -> Any:
    """Load the key under its parent; return its ESYS_TR. The parent, when we create it, is
    flushed at once so the key occupies one of the TPM's few transient slots."""
    from tpm2_pytss import TSS2_Exception
    from tpm2_pytss.constants import ESYS_TR
    from tpm2_pytss.types import TPM2B_DATA, TPM2B_SENSITIVE_CREATE, TPML_PCR_SELECTION

    parent_handle = int(key.parent) or _TPM2_RH_OWNER  # some writers store 0 for the owner
    stage = "create the parent key"
    try:
        if parent_handle == _TPM2_RH_OWNER:
            parent, *_ = ectx.create_primary(
                in_sensitive=TPM2B_SENSITIVE_CREATE(), in_public=_primary_template(_tpm_has_ecc(ectx)),
                primary_handle=ESYS_TR.RH_OWNER, outside_info=TPM2B_DATA(), creation_pcr=TPML_PCR_SELECTION(),
            )
            transient = True
        elif _PERSISTENT_FIRST <= parent_handle <= _PERSISTENT_LAST:
            stage = f"find the parent key 0x{parent_handle:08x}"
            parent = ectx.tr_from_tpmpublic(parent_handle)
            transient = False
        else:
            raise KeyLoadError(f"The TPM key {path} names parent 0x{parent_handle:08x}, which is "
                               "neither the owner hierarchy nor a persistent key.")
        stage = "load the key"
        try:
            return ectx.load(parent, key.private, key.public)
        finally:
            if transient:
                ectx.flush_context(parent)
            else:
                ectx.tr_close(parent)
    except TSS2_Exception as exc:
        kind = tpm_error_kind(int(exc.rc))
        if kind == "lockout":
            raise _lockout_error() from None
        if kind in ("auth", "auth-noda"):
            raise TokenError(f"The TPM refused the empty owner password needed to {stage}.",
                             hint="Keys under an owner hierarchy with a password are not supported; "
                             "use a persistent parent key.") from None
        if stage == "load the key" and kind in ("integrity", "other"):
            raise KeyLoadError(
                f"The TPM cannot load the key {path} ({exc}).",
                hint="A TSS2 key works only on the TPM that created it, under the same parent: "
                "check the TCTI (RAH_TPM_TCTI) and that the TPM was not cleared.",
            ) from None
        raise TokenError(f"The TPM failed to {stage} for {path}: {exc}.") from None


class LocatedTpmKey(Located):
    """A TPM key file and its certificate as `locate_tpmkey` found them: the key file parsed
    and checked against the certificate (its public part is in the file), the chain ordered;
    the TPM not touched and no password asked."""

    kind = "tpmkey"

    def __init__(self, config: SignerConfig) -> None:
        super().__init__()
        self.config = config
        self.key: Any = None
        self.key_type = ""
        self.restricted = False
        self.algorithm = ""

    def unlock(self, policy: SecretPolicy | None = None) -> TpmKeySigner:
        """The password (asked at most once through `policy`, never an empty one for a key that
        has one), the key loaded into the TPM, the signer."""
        self.require()
        config, key, path = self.config, self.key, self.config.private_key or ""
        assert self.certificate is not None
        if policy is None:  # without one from the front end: the callback, then the terminal
            from rolesanywhere_hsm.signers.secretpolicy import SecretPolicy

            policy = SecretPolicy.terminal(config.secret_callback)
        password = key_password(key, path, explicit=config.tpm_key_password,
                                no_password=config.no_tpm_key_password, policy=policy)
        tcti = tcti_from_env()
        log.debug("TPM key %s: %s, parent 0x%08x, TCTI %s", path, self.key_type, int(key.parent),
                  tcti or "default")
        ectx = _connect(tcti)
        try:
            handle = _load(ectx, key, path)
            ectx.tr_set_auth(handle, password)
        except BaseException:
            ectx.close()
            raise
        return TpmKeySigner(ectx, handle, key_type=self.key_type, restricted=self.restricted, path=path,
                            certificate=self.certificate, chain=self.chain, algorithm=self.algorithm)


def locate_tpmkey(config: SignerConfig) -> LocatedTpmKey:
    """Read the TPM key file and the certificate without the TPM (see signers.locate)."""
    _import_tpm2_pytss()
    from cryptography.hazmat.primitives import serialization

    from rolesanywhere_hsm.errors import CertificateError, RolesAnywhereError
    from rolesanywhere_hsm.signers import acceptance

    located = LocatedTpmKey(config)
    path = config.private_key or ""
    try:
        key = _parse_key(_read_key(path), path)
        located.key_type, located.restricted = _check_key(key, path)
    except RolesAnywhereError as exc:
        located.found(exc, "private-key")
        return located
    located.key = key
    located.secret_source = ("none: the key file says emptyAuth" if key.empty_auth else
                             f"--tpm-key-password, {PASSWORD_ENV_VAR}, a callback or the terminal")
    try:
        cert_data = read_regular_file(config.certificate, what="certificate", limit=CERTIFICATE_LIMIT,
                                      error=CertificateError)
        leaf, *extra = x509util.parse_certificates(cert_data, source=config.certificate)
        info = x509util.certificate_info(leaf)
    except RolesAnywhereError as exc:
        located.found(exc, "certificate")
        return located
    located.certificate, located.algorithm = leaf, info.algorithm
    public = serialization.load_der_public_key(key.public.publicArea.to_der()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    located.findings += acceptance.check(info, acceptance.KeyFacts("tpmkey", spki=public, path=path),
                                         dates=config.check_dates)
    try:
        if config.intermediates:
            extra.extend(x509util.load_certificates(config.intermediates))
        located.chain = x509util.order_chain(leaf, extra) if extra else ()
    except RolesAnywhereError as exc:
        located.found(exc, "intermediates")
    return located


def open_tpmkey_signer(config: SignerConfig) -> TpmKeySigner:
    """Open the TPM key file `config.private_key` with the certificate `config.certificate`:
    `locate_tpmkey`, its first finding raised, then `unlock` (the password, the TPM)."""
    return locate_tpmkey(config).unlock()
