"""Keys in a PKCS#11 token (YubiKey, TPM, HSM, SoftHSM) behind the Signer protocol.

`open_pkcs11_signer(config)` loads the module, selects exactly one token and one key (and the
certificate, from the token or a file), logs in once and keeps the session open; `sign()` is
one C_Sign (plus a context login for CKA_ALWAYS_AUTHENTICATE keys); `close()` logs out and
C_Finalizes. The private key never leaves the token: we read only public attributes (label,
id, key type, modulus, EC point, CKA_ALWAYS_AUTHENTICATE), never CKA_VALUE of a key or any
sensitive attribute, and never wrap, export or copy it.

Every python-pkcs11 exception is turned into one of ours in `_mapped_errors`; this module is
the only one that imports `pkcs11` (the registry in base.py imports it on first use), so a
file-key run never loads it. See docs/pkcs11.md for the user-facing rules.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pkcs11
from pkcs11 import Attribute, CertificateType, KeyType, Mechanism, ObjectClass, TokenFlag
from pkcs11 import exceptions as p11

from rolesanywhere_hsm import x509 as _x509
from rolesanywhere_hsm.errors import (
    KeyLoadError,
    ModuleLoadError,
    PinIncorrectError,
    PinLockedError,
    Pkcs11UriError,
    RolesAnywhereError,
    SelectionError,
    TokenError,
    TokenSigningError,
    UsageError,
)
from rolesanywhere_hsm.signers.base import CertifiedKeySigner, SecretCallback, SignerConfig
from rolesanywhere_hsm.signers.mechanisms import SigningSpec, choose_signing_spec
from rolesanywhere_hsm.signers.pin import (
    PinRequest,
    ProtectedAuthentication,
    resolve_pin,
)
from rolesanywhere_hsm.signers.pkcs11_uri import Pkcs11Uri, is_pkcs11_uri, parse_pkcs11_uri

# --debug shows the steps: module, token, key, mechanism, where the PIN came from (never the PIN).
log = logging.getLogger("rolesanywhere_hsm.pkcs11")

__all__ = [
    "DEFAULT_MODULE",
    "MODULE_DIRS",
    "MODULE_ENV_VAR",
    "Pkcs11Signer",
    "TokenCertificate",
    "list_certificates",
    "list_token_certificates",
    "open_pkcs11_signer",
    "resolve_module_path",
]

MODULE_ENV_VAR = "RAH_PKCS11_MODULE"
# shared/PROTOCOL.md section 7: the official helper's default --pkcs11-lib.
DEFAULT_MODULE = "p11-kit-proxy.so"
# Where a bare module name (module-name=, --pkcs11-lib NAME) is looked for, in order.
MODULE_DIRS = (
    "/usr/lib/x86_64-linux-gnu/pkcs11",
    "/usr/lib/aarch64-linux-gnu/pkcs11",
    "/usr/lib64/pkcs11",
    "/usr/lib/pkcs11",
    "/usr/local/lib/pkcs11",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
    "/usr/lib/softhsm",
    "/opt/homebrew/lib",
    "/opt/homebrew/lib/pkcs11",
)

# Token flags (PKCS#11 v2.40 section 3.2, CK_TOKEN_INFO); python-pkcs11's TokenFlag has them.
_PIN_COUNT_LOW = TokenFlag.USER_PIN_COUNT_LOW
_PIN_FINAL_TRY = TokenFlag.USER_PIN_FINAL_TRY
_PIN_LOCKED = TokenFlag.USER_PIN_LOCKED


# ---------------------------------------------------------------------------------------------
# Module discovery and lifetime


def resolve_module_path(
    uris: tuple[Pkcs11Uri | None, ...], configured: str | None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The module to load: URI module-path, URI module-name, --pkcs11-lib, $RAH_PKCS11_MODULE,
    then p11-kit-proxy.so (what the official helper loads). Names without a '/' are looked up
    in MODULE_DIRS, with and without 'lib' and '.so' (RFC 7512 section 2.3 module-name)."""
    environ = os.environ if environ is None else environ
    for uri in uris:
        if uri is not None and uri.module_path:
            return _existing_module(uri.module_path, "module-path in the pkcs11: URI")
    for uri in uris:
        if uri is not None and uri.module_name:
            return _find_module_by_name(uri.module_name, "module-name in the pkcs11: URI")
    for value, where in ((configured, "--pkcs11-lib"), (environ.get(MODULE_ENV_VAR), MODULE_ENV_VAR)):
        if value:
            if "/" in value:
                return _existing_module(value, where)
            return _find_module_by_name(value, where)
    return _find_module_by_name(DEFAULT_MODULE, "the default module")


def _existing_module(path: str, where: str) -> str:
    if not os.path.isfile(path):
        raise ModuleLoadError(
            f"The PKCS#11 module {path} (from {where}) does not exist.",
            hint="Check the path; `p11-kit list-modules` shows the modules installed here.",
        )
    return os.path.abspath(path)


def _find_module_by_name(name: str, where: str) -> str:
    base = name[:-3] if name.endswith(".so") else name
    candidates = [name, base + ".so", "lib" + base + ".so"] if "/" not in name else [name]
    for directory in MODULE_DIRS:
        for candidate in candidates:
            path = os.path.join(directory, candidate)
            if os.path.isfile(path):
                return path
    raise ModuleLoadError(
        f"The PKCS#11 module {name!r} (from {where}) was not found in the standard directories.",
        hint="Give its full path with --pkcs11-lib, module-path= in the URI, or "
        f"{MODULE_ENV_VAR}.",
    )


_modules_lock = threading.Lock()
_module_users: dict[str, int] = {}


def _acquire_module(path: str) -> Any:
    """Load and C_Initialize `path` for one more user. python-pkcs11 keeps one `lib` per path
    and modules read their configuration (SOFTHSM2_CONF, TPM2_PKCS11_*) only at C_Initialize,
    so the first user initialises and the last one finalises (`_release_module`): a process
    that opens a signer, closes it and opens another picks up a changed environment."""
    with _modules_lock:
        try:
            lib = pkcs11.lib(path)
        except p11.PKCS11Error as exc:
            detail = str(exc) if type(exc) is p11.PKCS11Error else type(exc).__name__
            hint = "Check that it is a PKCS#11 module for this machine and its configuration."
            if "softhsm" in path.lower():
                hint = "Check SOFTHSM2_CONF and the token directory it names."
            raise ModuleLoadError(
                f"The PKCS#11 module {path} cannot be loaded or initialised ({detail}).", hint=hint,
            ) from None
        _module_users[path] = _module_users.get(path, 0) + 1
        return lib


def _release_module(path: str) -> None:
    with _modules_lock:
        count = _module_users.get(path, 0) - 1
        if count > 0:
            _module_users[path] = count
            return
        _module_users.pop(path, None)
        loaded = pkcs11._loaded.get(path)  # noqa: SLF001 (the only way to find the cached lib)
        if loaded is not None and loaded.initialized:
            with contextlib.suppress(p11.PKCS11Error):
                loaded.finalize()  # also closes any session a failed login leaked (trap 2)


def _forget_module(path: str) -> None:
    """Tests only (softhsm.reset_softhsm_in_process): drop every registration and finalise."""
    with _modules_lock:
        _module_users[path] = 1
    _release_module(path)


def module_in_use(path: str) -> bool:
    """Whether an open signer holds `path` initialised (the SoftHSM builder checks this)."""
    with _modules_lock:
        return _module_users.get(path, 0) > 0


# ---------------------------------------------------------------------------------------------
# Exception mapping


@contextlib.contextmanager
def _mapped_errors(action: str, default: type[TokenError] = TokenError) -> Iterator[None]:
    """Turn python-pkcs11's exceptions into ours, naming what we were doing. Messages use the
    exception's class name only: its text could, in principle, carry data we passed in."""
    try:
        yield
    except RolesAnywhereError:
        raise
    except p11.PinLocked:
        raise PinLockedError(
            f"The token's user PIN is locked ({action}).",
            hint="Unblock it with the PUK or the security officer PIN (e.g. `ykman piv access "
            "unblock-pin`); rolesanywhere-hsm never retries a PIN.",
        ) from None
    except (p11.TokenNotPresent, p11.DeviceRemoved, p11.TokenNotRecognised) as exc:
        raise TokenError(f"The token went away while {action} ({type(exc).__name__}).",
                         hint="Insert the token again and rerun.") from None
    except p11.DeviceError:
        # `default`, not TokenError: ykcs11 reports a card's refusal to sign (e.g. SW 6A80)
        # as CKR_DEVICE_ERROR, and a failed C_Sign must stay a TokenSigningError.
        raise default(
            f"The token or its reader failed while {action} (DeviceError).",
            hint="For smart cards and YubiKeys, check that the smart card service (pcscd) runs.",
        ) from None
    except (p11.UserNotLoggedIn, p11.SessionClosed, p11.SessionHandleInvalid) as exc:
        raise default(f"The token session was lost while {action} ({type(exc).__name__}).",
                      hint="Rerun; the session is reopened on the next attempt.") from None
    except p11.GeneralError:
        raise default(
            f"The token failed while {action} (GeneralError).",
            hint="On a TPM (tpm2-pkcs11) without tpm2-abrmd, other processes may hold the TPM's "
            "3 object slots: close them, or run tpm2-abrmd; else rerun with --debug.",
        ) from None
    except p11.PKCS11Error as exc:
        detail = type(exc).__name__
        if type(exc) is p11.PKCS11Error and str(exc).startswith(("OS exception", "Unknown exception")):
            detail = str(exc)  # dlopen's reason: names the file and the loader error
        raise default(f"The token failed while {action} ({detail}).",
                      hint="Rerun with --debug; check the module's own logs.") from None
    except OSError as exc:
        raise default(f"The PKCS#11 module failed while {action}: {exc.strerror or exc}.",
                      hint="Check the module path and its permissions.") from None


# ---------------------------------------------------------------------------------------------
# Selection


def _token_description(token: Any) -> str:
    serial = token.serial.decode("ascii", "replace") if isinstance(token.serial, bytes) else token.serial
    return f"slot {token.slot.slot_id} ({token.label!r}, serial {serial})"


def _token_matches(token: Any, uri: Pkcs11Uri) -> bool:
    slot = token.slot
    serial = token.serial.decode("ascii", "replace") if isinstance(token.serial, bytes) else token.serial
    checks = (
        (uri.token, token.label),
        (uri.manufacturer, token.manufacturer_id),
        (uri.serial, serial),
        (uri.model, token.model),
        (uri.slot_description, slot.slot_description),
        (uri.slot_manufacturer, slot.manufacturer_id),
    )
    if any(want is not None and want.rstrip() != have.rstrip() for want, have in checks):
        return False
    return uri.slot_id is None or uri.slot_id == slot.slot_id


def _check_library(lib: Any, uri: Pkcs11Uri, module_path: str) -> None:
    have = {
        "library-manufacturer": lib.manufacturer_id.rstrip(),
        "library-description": lib.library_description.rstrip(),
        "library-version": tuple(lib.library_version),
    }
    for name, want in uri.library_criteria().items():
        if (want.rstrip() if isinstance(want, str) else want) != have[name]:
            raise SelectionError(
                f"The module {module_path} has {name}={have[name]!r}, the URI wants {want!r}.",
                hint="Load the module the URI was written for (module-path=), or drop the "
                "library-* attributes.",
            )


def _initialised_tokens(lib: Any) -> list[Any]:
    with _mapped_errors("listing the slots"):
        tokens = []
        for slot in lib.get_slots(token_present=True):
            try:
                token = slot.get_token()
            except (p11.TokenNotPresent, p11.TokenNotRecognised):
                continue
            if token.flags & TokenFlag.TOKEN_INITIALIZED:  # SoftHSM's free slot is not
                tokens.append(token)
    return tokens


def _select_token(lib: Any, uri: Pkcs11Uri, module_path: str) -> Any:
    """The one initialised token that `uri`'s token and slot attributes select."""
    _check_library(lib, uri, module_path)
    tokens = _initialised_tokens(lib)
    criteria = uri.token_criteria()
    wanted = ", ".join(f"{k}={v!r}" for k, v in criteria.items()) or "(any token)"
    if not tokens:
        raise SelectionError(
            f"The module {module_path} shows no initialised token.",
            hint="Insert the token (for SoftHSM, check SOFTHSM2_CONF and the token directory; "
            "for smart cards, that pcscd runs).",
        )
    matching = [t for t in tokens if _token_matches(t, uri)]
    if len(matching) == 1:
        return matching[0]
    if not matching:
        present = "; ".join(_token_description(t) for t in tokens)
        raise SelectionError(
            f"No token matches {wanted}. The module {module_path} has: {present}.",
            hint="Fix token=, serial= or slot-id= in the URI (`pkcs11-tool --list-token-slots` "
            "lists them).",
        )
    found = "; ".join(_token_description(t) for t in matching)
    raise SelectionError(
        f"{len(matching)} tokens match {wanted}: {found}.",
        hint="Add serial= or slot-id= to the URI to choose one.",
    )


def _object_description(obj: Any) -> str:
    label = obj[Attribute.LABEL]
    ident = obj[Attribute.ID]
    return f"label {label!r} id {_hex_id(ident)}"


def _hex_id(ident: bytes | None) -> str:
    return "".join(f"%{b:02x}" for b in ident) if ident else "(empty)"


def _find_one(session: Any, template: dict[Any, Any], what: str, criteria: str, token_name: str,
              hint: str) -> Any:
    objects = list(session.get_objects(template))
    if len(objects) == 1:
        return objects[0]
    if not objects:
        raise SelectionError(f"No {what} matches {criteria or '(any)'} on token {token_name!r}.",
                             hint=hint)
    listed = "; ".join(_object_description(o) for o in objects)
    raise SelectionError(
        f"{len(objects)} {what}s match {criteria or '(any)'} on token {token_name!r}: {listed}.",
        hint="Add object= or id= to the URI so that exactly one matches.",
    )


def _object_template(uri: Pkcs11Uri, object_class: Any) -> dict[Any, Any]:
    template: dict[Any, Any] = {Attribute.CLASS: object_class}
    if uri.object is not None:
        template[Attribute.LABEL] = uri.object
    if uri.id is not None:
        template[Attribute.ID] = uri.id
    return template


# ---------------------------------------------------------------------------------------------
# Key / certificate pairing


def _certificate_public_numbers(info: _x509.CertificateInfo) -> tuple[str, Any]:
    """('RSA', modulus int) or ('EC', uncompressed point bytes) from the certificate."""
    from asn1crypto import keys

    spki = keys.PublicKeyInfo.load(info.public_key_info)
    if info.key_type == "RSA":
        return "RSA", spki["public_key"].parsed["modulus"].native
    return "EC", bytes(spki["public_key"])


def _same_public_key(token_value: Any, info: _x509.CertificateInfo) -> bool:
    """Compare the token's CKA_MODULUS / CKA_EC_POINT with the certificate's key. CKA_EC_POINT
    is a DER OCTET STRING holding the point (PKCS#11 section 2.3.3) but some modules give the
    bare point: both forms are accepted."""
    from asn1crypto.core import OctetString

    key_type, cert_value = _certificate_public_numbers(info)
    if key_type == "RSA":
        return int.from_bytes(token_value, "big") == cert_value
    return token_value in (cert_value, OctetString(cert_value).dump())


def _token_public_value(session: Any, key: Any, key_type: str) -> Any | None:
    """The key's public half as the token knows it, or None when the token exposes none.

    Reads only public attributes: CKA_MODULUS / CKA_EC_POINT of the private key (allowed to
    be read, PKCS#11 section 4.9), else of the public key object with the same CKA_ID.
    """
    attribute = Attribute.MODULUS if key_type == "RSA" else Attribute.EC_POINT
    with contextlib.suppress(p11.AttributeTypeInvalid, p11.AttributeSensitive, p11.FunctionFailed,
                             p11.GeneralError):
        value = key[attribute]
        if value:
            return bytes(value)
    ident = key[Attribute.ID]
    if not ident:
        return None
    publics = list(session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: ident}))
    if len(publics) != 1:
        return None
    with contextlib.suppress(p11.AttributeTypeInvalid, p11.AttributeSensitive):
        value = publics[0][attribute]
        if value:
            return bytes(value)
    return None


# ---------------------------------------------------------------------------------------------
# The signer


@dataclass(frozen=True)
class _KeyChoice:
    """How to find the key again in a new session (after a signing error)."""

    template: tuple[tuple[Any, Any], ...]
    criteria: str


class Pkcs11Signer(CertifiedKeySigner):
    """A logged-in session on one token key; see the module docstring for the costs.

    Thread-safe: one sign at a time per signer (a PKCS#11 session runs one operation at a
    time). Build it with `open_pkcs11_signer`; the constructor only stores what that found.
    `sign_count` (signatures made) and `login_count` (user logins, not context logins) are
    there for diagnostics and tests.
    """

    def __init__(
        self, *, module_path: str, token: Any, session: Any, key: Any, key_choice: _KeyChoice,
        certificate: bytes, chain: tuple[bytes, ...], algorithm: str, spec: SigningSpec,
        always_authenticate: bool, pin_request: PinRequest, reuse_pin: bool,
        user_pin: str | None, verify_pending: bool, login_required: bool,
    ) -> None:
        self._module_path = module_path
        self._token = token
        self._session: Any | None = session
        self._key = key
        self._key_choice = key_choice
        super().__init__(certificate, chain, algorithm)
        self._spec = spec
        self._always_authenticate = always_authenticate
        self._pin_request = pin_request
        self._reuse_pin = reuse_pin
        # Kept only with --reuse-pin (the context PIN of an always-authenticate key): that is
        # what the user asked for. Never shown: see __repr__.
        self._kept_pin = user_pin if reuse_pin else None
        self._verify_pending = verify_pending
        self._login_required = login_required
        self._key_mismatch = False
        # Set when the token refused a PIN (a re-login or a context login): from then on this
        # signer refuses to sign rather than present any PIN again (never retry a PIN).
        self._pin_refused: type[PinIncorrectError] | type[PinLockedError] | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.sign_count = 0
        self.login_count = 1 if login_required else 0

    # -- Signer protocol ---------------------------------------------------------------------

    @property
    def spec(self) -> SigningSpec:
        """The mechanism choice, for diagnostics (`--debug`) and tests."""
        return self._spec

    @property
    def token_label(self) -> str:
        return self._token.label

    @property
    def always_authenticate(self) -> bool:
        return self._always_authenticate

    def sign(self, message: bytes) -> bytes:
        """One C_Sign (after a context login for always-authenticate keys). A failure discards
        the session (a failed C_Sign can leave it with an operation active or logged out) and
        the next call opens a new one."""
        with self._lock:
            if self._closed:
                raise TokenError("The PKCS#11 signer is closed.", hint="Open a new signer.")
            if self._key_mismatch:
                raise KeyLoadError(*_MISMATCH)
            if self._pin_refused is not None:
                raise self._pin_refused(
                    f"The token {self._token.label!r} refused a PIN earlier; this signer does "
                    "not present a PIN again.",
                    hint="Fix the PIN source and open a new signer (restart the server).",
                )
            try:
                if self._session is None:
                    self._reopen()
            except (PinIncorrectError, PinLockedError) as exc:
                self._pin_refused = type(exc)
                raise
            data = self._spec.data_to_sign(message)
            context_pin = self._context_pin() if self._always_authenticate else None
            try:
                with _mapped_errors(f"signing with key {self._key_choice.criteria}", TokenSigningError):
                    try:
                        raw = self._key.sign(data, mechanism=Mechanism(self._spec.mechanism),
                                             pin=context_pin)
                    except p11.PinIncorrect:
                        raise self._pin_incorrect(context=True) from None
                    except (p11.PinLenRange, p11.PinInvalid):
                        raise PinIncorrectError(
                            "The token refused the context PIN's length or characters.",
                            hint="Give the key's PIN; it was tried once and is not retried.",
                        ) from None
            except RolesAnywhereError as exc:
                if isinstance(exc, (PinIncorrectError, PinLockedError)):
                    self._pin_refused = type(exc)
                self._discard_session()
                raise
            finally:
                context_pin = None
            signature = self._spec.wire_signature(raw)
            self.sign_count += 1
            if self._verify_pending:
                self._verify_pairing(message, signature)
            return signature

    def close(self) -> None:
        """Log out, close the session and C_Finalize (when no other signer uses the module)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._kept_pin = None
            self._discard_session()
            _release_module(self._module_path)

    def __repr__(self) -> str:
        return (f"Pkcs11Signer(module={self._module_path!r}, token={self._token.label!r}, "
                f"key={self._key_choice.criteria}, mechanism={self._spec.mechanism_name}, "
                f"closed={self._closed})")

    # -- internals ---------------------------------------------------------------------------

    def _context_pin(self) -> str:
        if self._reuse_pin and self._kept_pin is not None:
            return self._kept_pin
        request = PinRequest(
            description=f"PIN to sign with key {self._key_choice.criteria} on token "
            f"{self._token.label!r}",
            pin_value=self._pin_request.pin_value,
            pin_source=self._pin_request.pin_source,
            callback=self._pin_request.callback,
            environ=self._pin_request.environ,
            prompt=self._pin_request.prompt,
        )
        pin, _ = resolve_pin(request)
        if pin is ProtectedAuthentication:  # pragma: no cover (no such token here)
            raise TokenSigningError(
                "This always-authenticate key needs a context PIN, which a PIN pad cannot give "
                "through this program.", hint="Use a key without CKA_ALWAYS_AUTHENTICATE.")
        assert isinstance(pin, str)
        return pin

    def _pin_incorrect(self, *, context: bool) -> PinIncorrectError | PinLockedError:
        return _pin_refused(self._token, "context PIN" if context else "PIN")

    def _discard_session(self) -> None:
        session, self._session, self._key = self._session, None, None
        if session is not None:
            with contextlib.suppress(p11.PKCS11Error, RolesAnywhereError):
                session.close()

    def _reopen(self) -> None:
        """A new session after a signing error: the PIN source is asked again (the PIN is not
        kept unless --reuse-pin), and the key is looked up again with the same criteria."""
        pin: Any = None
        if self._login_required:
            if self._kept_pin is not None:
                pin = self._kept_pin
            else:
                pin, _ = resolve_pin(self._pin_request)
        session = _login(self._token, pin)
        self.login_count += 1 if self._login_required else 0
        try:
            with _mapped_errors("finding the key again"):
                self._key = _find_one(session, dict(self._key_choice.template), "private key",
                                      self._key_choice.criteria, self._token.label,
                                      "The key disappeared from the token.")
        except RolesAnywhereError:
            with contextlib.suppress(p11.PKCS11Error):
                session.close()
            raise
        self._session = session

    def _verify_pairing(self, message: bytes, signature: bytes) -> None:
        """The token exposed no public key: check the first real signature against the
        certificate, once. No extra test signature is ever made (one C_Sign per sign())."""
        from cryptography import x509 as cx509
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

        public_key = cx509.load_der_x509_certificate(self._certificate).public_key()
        try:
            if isinstance(public_key, rsa.RSAPublicKey):
                public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            elif isinstance(public_key, ec.EllipticCurvePublicKey):
                public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            self._key_mismatch = True
            raise KeyLoadError(*_MISMATCH) from None
        self._verify_pending = False


_MISMATCH = (
    "The private key on the token does not belong to the certificate (its signature does not "
    "verify with the certificate's public key).",
)


def _pin_refused(token: Any, what: str) -> PinIncorrectError | PinLockedError:
    """PinIncorrect with the tries left that the token's flags tell (re-read after the failure)."""
    flags = 0
    with contextlib.suppress(p11.PKCS11Error):
        flags = token.slot.get_token().flags
    name = token.label
    if flags & _PIN_LOCKED:
        return PinLockedError(
            f"The token {name!r} refused the {what} and has now locked it.",
            hint="Unblock it with the PUK or security officer PIN.",
        )
    if flags & _PIN_FINAL_TRY:
        left = "ONE try is left before the PIN locks"
    elif flags & _PIN_COUNT_LOW:
        left = "few tries are left before the PIN locks"
    else:
        left = "the token does not say how many tries are left"
    return PinIncorrectError(
        f"The token {name!r} refused the {what} ({left}). It was tried once and is not retried.",
        hint="Check the PIN source (URI pin-value/pin-source, RAH_PKCS11_PIN, the prompt) "
        "before running again.",
    )


def _login(token: Any, pin: Any) -> Any:
    """C_OpenSession + C_Login (once). `pin` None means no login (token needs none)."""
    if pin is ProtectedAuthentication:
        pin = pkcs11.PROTECTED_AUTH
    with _mapped_errors(f"logging in to token {token.label!r}"):
        try:
            return token.open(user_pin=pin)
        except p11.PinIncorrect:
            raise _pin_refused(token, "PIN") from None
        except (p11.PinLenRange, p11.PinInvalid):
            raise PinIncorrectError(
                f"The token {token.label!r} refused the PIN's length or characters.",
                hint="It was tried once and is not retried; check the PIN source.",
            ) from None
        except p11.UserAlreadyLoggedIn:
            raise TokenError(
                f"This process is already logged in to token {token.label!r} (another "
                "signer on the same token is open).",
                hint="Use one signer per token and process.",
            ) from None
        except p11.UserPinNotInitialized:
            raise TokenError(f"The token {token.label!r} has no user PIN set.",
                             hint="Initialise the user PIN (e.g. `pkcs11-tool --init-pin`).") from None


def open_pkcs11_signer(
    config: SignerConfig, *, spec: SigningSpec | None = None,
    environ: Mapping[str, str] | None = None, prompt: SecretCallback | None = None,
) -> Pkcs11Signer:
    """Open the token key that `config` names (see docs/pkcs11.md).

    `config.certificate` is a `pkcs11:` URI (the certificate on the token) or a file;
    `config.private_key` a `pkcs11:` URI or None (then the key with the certificate's CKA_ID).
    `spec` forces a mechanism choice (tests, or a token that lists mechanisms it lacks);
    `environ` and `prompt` replace os.environ and the /dev/tty prompt (tests).
    """
    cert_uri = _parse_if_uri(config.certificate, "--certificate")
    key_uri = _parse_if_uri(config.private_key, "--private-key") if config.private_key else None
    if config.private_key and key_uri is None:
        raise UsageError(
            "The PKCS#11 signer needs --private-key as a pkcs11: URI (or left out).",
            hint="Give --private-key pkcs11:token=...;object=... or use a key file.",
        )
    if cert_uri is None and key_uri is None:
        raise UsageError("Neither --certificate nor --private-key is a pkcs11: URI.",
                         hint="Name the key on the token with --private-key pkcs11:...")
    for uri, what in ((cert_uri, "certificate"), (key_uri, "private key")):
        expected = "cert" if what == "certificate" else "private"
        if uri is not None and uri.type is not None and uri.type != expected:
            raise Pkcs11UriError(
                f"The {what} URI says type={uri.type}; it must be type={expected} or none.",
                hint=f"Drop type= or write type={expected}.",
            )
    module_path = resolve_module_path((key_uri, cert_uri), config.pkcs11_lib, environ)
    main_uri = key_uri or cert_uri
    assert main_uri is not None
    lib = _acquire_module(module_path)
    session = None
    try:
        token = _select_token(lib, main_uri, module_path)
        if key_uri is not None and cert_uri is not None and cert_uri.token_criteria():
            cert_token = _select_token(lib, cert_uri, module_path)
            if cert_token.slot.slot_id != token.slot.slot_id:
                raise SelectionError(
                    f"The certificate URI selects {_token_description(cert_token)} but the key "
                    f"URI selects {_token_description(token)}.",
                    hint="Both must name the same token.",
                )
        flags = token.flags
        if flags & _PIN_LOCKED:
            raise PinLockedError(f"The user PIN of token {token.label!r} is locked (not tried).",
                                 hint="Unblock it with the PUK or security officer PIN.")
        pin_request = PinRequest(
            description=f"PIN for token {token.label!r}",
            pin_value=main_uri.pin_value if main_uri.pin_value is not None else (
                cert_uri.pin_value if cert_uri else None),
            pin_source=main_uri.pin_source if main_uri.pin_source is not None else (
                cert_uri.pin_source if cert_uri else None),
            protected_authentication_path=bool(flags & TokenFlag.PROTECTED_AUTHENTICATION_PATH),
            callback=config.secret_callback,
            environ=environ,
            prompt=prompt,
        )
        login_required = bool(flags & TokenFlag.LOGIN_REQUIRED)
        user_pin: Any = None
        if login_required:
            user_pin, source = resolve_pin(pin_request)
            log.debug("PIN for token %r from %s", token.label, source.value)
        session = _login(token, user_pin)
        if user_pin is ProtectedAuthentication:
            user_pin = None

        with _mapped_errors(f"reading objects on token {token.label!r}"):
            cert_obj_id: bytes | None = None
            chain_candidates: list[bytes] = []
            if cert_uri is not None:
                cert_obj = _find_one(
                    session,
                    _object_template(cert_uri, ObjectClass.CERTIFICATE)
                    | {Attribute.CERTIFICATE_TYPE: CertificateType.X_509},
                    "certificate", cert_uri.object_criteria(), token.label,
                    "List the token's certificates with `rolesanywhere-hsm read-certificate-data "
                    "--certificate pkcs11:token=...` or `pkcs11-tool --list-objects --type cert`.",
                )
                certificate = bytes(cert_obj[Attribute.VALUE])
                cert_obj_id = cert_obj[Attribute.ID] or None
            else:
                from_file = _x509.load_certificates(config.certificate)
                certificate, chain_candidates = from_file[0], from_file[1:]
            info = _x509.certificate_info(certificate)
            algorithm = info.algorithm  # refuses key types Roles Anywhere does not take

            if key_uri is not None and (key_uri.object is not None or key_uri.id is not None):
                key_template = _object_template(key_uri, ObjectClass.PRIVATE_KEY)
                criteria = key_uri.object_criteria()
            elif cert_obj_id is not None:
                key_template = {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: cert_obj_id}
                criteria = f"id={_hex_id(cert_obj_id)} (the certificate's CKA_ID)"
            elif cert_uri is not None:
                key_template = _object_template(cert_uri, ObjectClass.PRIVATE_KEY)
                criteria = cert_uri.object_criteria()
            else:
                key_template = {Attribute.CLASS: ObjectClass.PRIVATE_KEY}
                criteria = ""
            key = _find_one(session, key_template, "private key", criteria, token.label,
                            "Private keys are listed only after login: `pkcs11-tool --login "
                            "--list-objects --type privkey`.")
            key_type = {KeyType.RSA: "RSA", KeyType.EC: "EC"}.get(key[Attribute.KEY_TYPE], "other")
            if key_type != info.key_type:
                raise KeyLoadError(
                    f"The key {criteria or ''} on token {token.label!r} is {key_type} but the "
                    f"certificate holds an {info.key_type} key.",
                    hint="Select the key that belongs to the certificate (same id=).",
                )
            if not hasattr(key, "sign"):
                raise TokenSigningError(
                    f"The key {criteria} on token {token.label!r} may not sign (CKA_SIGN is false).",
                    hint="Use a signing key.",
                )
            token_public = _token_public_value(session, key, key_type)
            verify_pending = token_public is None
            if token_public is not None and not _same_public_key(token_public, info):
                raise KeyLoadError(*_MISMATCH[:1],
                                   hint="Select the key with the certificate's id=, or the "
                                   "certificate of this key.")
            always_auth = False
            with contextlib.suppress(p11.AttributeTypeInvalid, p11.AttributeSensitive):
                always_auth = bool(key[Attribute.ALWAYS_AUTHENTICATE])
            if spec is None:
                mechanisms = token.slot.get_mechanisms()
                spec = choose_signing_spec(key_type, mechanisms, key_bits=info.key_bits,
                                           curve=info.curve)
            elif spec.key_type != key_type:
                raise UsageError(f"The forced signing spec is for {spec.key_type}, the key is {key_type}.",
                                 hint="Pass a spec for the key's type.")

        log.debug("module %s, token %r, key %s, mechanism %s%s", module_path, token.label,
                  criteria or "(the only key)", spec.mechanism_name,
                  ", always-authenticate" if always_auth else "")
        if config.intermediates:
            chain_candidates += _x509.load_certificates(config.intermediates)
        chain = _x509.order_chain(certificate, chain_candidates) if chain_candidates else ()

        return Pkcs11Signer(
            module_path=module_path, token=token, session=session, key=key,
            key_choice=_KeyChoice(tuple(key_template.items()), criteria or "(the only key)"),
            certificate=certificate, chain=chain, algorithm=algorithm, spec=spec,
            always_authenticate=always_auth, pin_request=pin_request,
            reuse_pin=config.reuse_pin, user_pin=user_pin if isinstance(user_pin, str) else None,
            verify_pending=verify_pending, login_required=login_required,
        )
    except BaseException:
        if session is not None:
            with contextlib.suppress(p11.PKCS11Error):
                session.close()
        _release_module(module_path)
        raise


@dataclass(frozen=True)
class TokenCertificate:
    """A certificate found on a token, with the URI that selects exactly it."""

    der: bytes
    label: str
    id: bytes
    token: str
    serial: str
    uri: str


def list_token_certificates(
    uri: str, *, pkcs11_lib: str | None = None, environ: Mapping[str, str] | None = None,
) -> list[TokenCertificate]:
    """Every X.509 certificate that `uri` matches, on every token it matches, read without
    login (certificates are public objects). For `read-certificate-data` and for people
    looking for the URI to give --certificate; no PIN is asked for."""
    parsed = _parse_if_uri(uri, "--certificate")
    if parsed is None:
        raise Pkcs11UriError("This is not a pkcs11: URI.", hint="Example: pkcs11:token=mytoken")
    module_path = resolve_module_path((parsed,), pkcs11_lib, environ)
    lib = _acquire_module(module_path)
    found: list[TokenCertificate] = []
    try:
        _check_library(lib, parsed, module_path)
        for token in _initialised_tokens(lib):
            if not _token_matches(token, parsed):
                continue
            serial = token.serial.decode("ascii", "replace") if isinstance(token.serial, bytes) else token.serial
            with _mapped_errors(f"listing certificates on token {token.label!r}"):
                session = token.open()
                try:
                    template = _object_template(parsed, ObjectClass.CERTIFICATE) | {
                        Attribute.CERTIFICATE_TYPE: CertificateType.X_509}
                    for obj in session.get_objects(template):
                        label, ident = obj[Attribute.LABEL], obj[Attribute.ID] or b""
                        selector = Pkcs11Uri(token=token.label, serial=serial, object=label or None,
                                             id=ident or None, type="cert")
                        found.append(TokenCertificate(bytes(obj[Attribute.VALUE]), label, ident,
                                                      token.label, serial, selector.to_string()))
                finally:
                    session.close()
    finally:
        _release_module(module_path)
    return found


def list_certificates(
    uri: str, pkcs11_lib: str | None = None, environ: Mapping[str, str] | None = None,
) -> list[dict[str, str]]:
    """`read-certificate-data` for a pkcs11: URI (shared/PROTOCOL.md section 7): per matching
    certificate its SHA-1 fingerprint, subject, issuer, serial (hex) and the URI selecting it.
    JSON-ready; no PIN is asked for."""
    import hashlib

    result = []
    for found in list_token_certificates(uri, pkcs11_lib=pkcs11_lib, environ=environ):
        info = _x509.certificate_info(found.der)
        result.append({
            "uri": found.uri,
            "sha1Fingerprint": hashlib.sha1(found.der).hexdigest().upper(),  # noqa: S324 (an identifier)
            "subject": info.subject,
            "issuer": info.issuer,
            "serialNumber": format(info.serial, "x"),
            "token": found.token,
            "label": found.label,
            "id": found.id.hex(),
        })
    return result


def _parse_if_uri(value: str | None, option: str) -> Pkcs11Uri | None:
    if value is None or not is_pkcs11_uri(value):
        return None
    try:
        return parse_pkcs11_uri(value)
    except Pkcs11UriError as exc:
        raise Pkcs11UriError(f"{option}: {exc.message}", hint=exc.hint) from None

