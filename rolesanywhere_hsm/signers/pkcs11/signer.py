"""The PKCS#11 signer: one logged-in (or public) session on one token key.

Built from an `OpenedKey` (what `opening.open_pkcs11_signer` found and checked); `sign()` is
one C_Sign (plus a context login for CKA_ALWAYS_AUTHENTICATE keys); `close()` logs out and
releases the module. The private key never leaves the token.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from pkcs11 import Attribute, Mechanism
from pkcs11 import exceptions as p11

from rolesanywhere_hsm.errors import (
    KeyLoadError,
    PinIncorrectError,
    PinLockedError,
    RolesAnywhereError,
    TokenError,
    TokenSigningError,
)
from rolesanywhere_hsm.record import Record
from rolesanywhere_hsm.signers.base import CertifiedKeySigner
from rolesanywhere_hsm.signers.mechanisms import SigningSpec
from rolesanywhere_hsm.signers.pin import ProtectedAuthentication
from rolesanywhere_hsm.signers.secretpolicy import SecretPolicy, SecretRequest
from rolesanywhere_hsm.signers.pkcs11.error_mapping import login, mapped_errors, pin_refused
from rolesanywhere_hsm.signers.pkcs11.modules import release_module
from rolesanywhere_hsm.signers.pkcs11.pairing import MISMATCH

__all__ = ["OpenedKey", "Pkcs11Signer", "find_one_key"]


class OpenedKey(Record):
    """Everything the signer needs about one key, found and checked by the opening step.

    `key_template` and `key_criteria` find the key again in a new session (after a signing
    error); `verify_pending` says the token showed no public key, so the first signature is
    checked against the certificate; `login_required` says whether sessions need a PIN.
    """

    __slots__ = ("module_path", "token", "session", "key", "key_template", "key_criteria", "certificate",
                 "chain", "algorithm", "spec", "always_authenticate", "secret_request", "policy",
                 "login_required", "verify_pending", "cert_id")
    _compared = __slots__
    module_path: str
    token: Any
    session: Any
    key: Any
    key_template: tuple[tuple[Any, Any], ...]
    key_criteria: str
    certificate: bytes
    chain: tuple[bytes, ...]
    algorithm: str
    spec: SigningSpec
    always_authenticate: bool
    secret_request: SecretRequest  # the token PIN, as the login asked for it
    policy: SecretPolicy  # the front end's, asked again for a context PIN or a re-login
    login_required: bool
    verify_pending: bool
    cert_id: bytes | None  # the leaf's CKA_ID when it is on the token (rotation)

    def __init__(self, module_path: str, token: Any, session: Any, key: Any,
                 key_template: tuple[tuple[Any, Any], ...], key_criteria: str,
                 certificate: bytes, chain: tuple[bytes, ...], algorithm: str,
                 spec: SigningSpec, always_authenticate: bool, secret_request: SecretRequest,
                 policy: SecretPolicy, login_required: bool, verify_pending: bool,
                 cert_id: bytes | None = None) -> None:
        self._set(module_path=module_path, token=token, session=session, key=key, key_template=key_template,
                  key_criteria=key_criteria, certificate=certificate, chain=chain, algorithm=algorithm,
                  spec=spec, always_authenticate=always_authenticate, secret_request=secret_request,
                  policy=policy, login_required=login_required, verify_pending=verify_pending,
                  cert_id=cert_id)


def find_one_key(session: Any, template: dict[Any, Any], criteria: str, token_label: str,
                 hint: str) -> Any:
    """The one private key `template` finds in `session`, or a SelectionError listing them."""
    from rolesanywhere_hsm.signers.pkcs11.selection import ObjectSnapshot, TokenSnapshot, select_object

    objects = list(session.get_objects(template))
    if len(objects) == 1:
        return objects[0]
    here = TokenSnapshot(slot_id=-1, label=token_label)
    snapshots = [ObjectSnapshot(here, "private", o[Attribute.LABEL] or "", bytes(o[Attribute.ID] or b""))
                 for o in objects]
    select_object(snapshots, "private key", criteria, f"token {token_label!r}", hint)
    raise AssertionError("unreachable")  # pragma: no cover


class Pkcs11Signer(CertifiedKeySigner):
    """A logged-in session on one token key; see the module docstring for the costs.

    Thread-safe: one sign at a time per signer (a PKCS#11 session runs one operation at a
    time). Build it with `open_pkcs11_signer`; the constructor only stores what that found.
    `sign_count` (signatures made) and `login_count` (user logins, not context logins) are
    there for diagnostics and tests.
    """

    def __init__(self, opened: OpenedKey, *, reuse_pin: bool = False,
                 user_pin: str | None = None) -> None:
        self._module_path = opened.module_path
        self._token = opened.token
        self._session: Any | None = opened.session
        self._key = opened.key
        self._key_template = opened.key_template
        self._key_criteria = opened.key_criteria
        super().__init__(opened.certificate, opened.chain, opened.algorithm)
        self._spec = opened.spec
        self._always_authenticate = opened.always_authenticate
        self._secret_request = opened.secret_request
        self._policy = opened.policy
        self._reuse_pin = reuse_pin
        # Kept only with --reuse-pin (the context PIN of an always-authenticate key): that is
        # what the user asked for. Never shown: see __repr__.
        self._kept_pin = user_pin if reuse_pin else None
        self._verify_pending = opened.verify_pending
        self._cert_id = opened.cert_id
        self._login_required = opened.login_required
        self._key_mismatch = False
        # Set when the token refused a PIN (a re-login or a context login): from then on this
        # signer refuses to sign rather than present any PIN again (never retry a PIN).
        self._pin_refused: type[PinIncorrectError] | type[PinLockedError] | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.sign_count = 0
        self.login_count = 1 if opened.login_required else 0

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

    @property
    def token_serial(self) -> str:
        from rolesanywhere_hsm.signers.pkcs11.inventory import token_serial

        return token_serial(self._token)

    def token_certificates(self) -> list[bytes]:
        """The certificates on the token with the leaf's CKA_ID (a renewal written next to or
        over it), read in the session already open: no login. Empty when the leaf is a file."""
        from pkcs11 import ObjectClass

        with self._lock:
            if self._cert_id is None or self._session is None or self._closed:
                return []
            with mapped_errors(f"reading the certificates on token {self._token.label!r}"):
                return [bytes(o[Attribute.VALUE]) for o in self._session.get_objects(
                    {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.ID: self._cert_id})]

    def sign(self, message: bytes) -> bytes:
        """One C_Sign (after a context login for always-authenticate keys). A failure discards
        the session (a failed C_Sign can leave it with an operation active or logged out) and
        the next call opens a new one."""
        return self._sign_with(message, None)

    def sign_with_digest(self, message: bytes, digest: str) -> bytes:
        """`sign()` with another hash (SHA256, SHA384, SHA512), for `sign-string --digest`, as
        the file signer has it (mechanisms.spec_for_digest picks the mechanism)."""
        return self._sign_with(message, digest)

    def _sign_with(self, message: bytes, digest: str | None) -> bytes:
        with self._lock:
            if self._closed:
                raise TokenError("The PKCS#11 signer is closed.", hint="Open a new signer.")
            if self._key_mismatch:
                raise KeyLoadError(*MISMATCH)
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
            spec = self._spec
            if digest is not None:
                from rolesanywhere_hsm.signers.mechanisms import spec_for_digest

                with mapped_errors(f"listing the mechanisms of token {self._token.label!r}"):
                    spec = spec_for_digest(spec, digest, self._token.slot.get_mechanisms())
            data = spec.data_to_sign(message)
            context_pin = self._context_pin() if self._always_authenticate else None
            try:
                with mapped_errors(f"signing with key {self._key_criteria}", TokenSigningError):
                    try:
                        raw = self._key.sign(data, mechanism=Mechanism(spec.mechanism),
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
            signature = spec.wire_signature(raw)
            self.sign_count += 1
            if self._verify_pending and spec.digest == "SHA256":  # the check is over SHA-256
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
            release_module(self._module_path)

    def __repr__(self) -> str:
        return (f"Pkcs11Signer(module={self._module_path!r}, token={self._token.label!r}, "
                f"key={self._key_criteria}, mechanism={self._spec.mechanism_name}, "
                f"closed={self._closed})")

    # -- internals ---------------------------------------------------------------------------

    def _context_pin(self) -> str:
        if self._reuse_pin and self._kept_pin is not None:
            return self._kept_pin
        request = self._secret_request._replace(
            protected_authentication_path=False,
            description=f"PIN to sign with key {self._key_criteria} on token {self._token.label!r}")
        pin, _ = self._policy.resolve(request)
        if pin is ProtectedAuthentication:  # pragma: no cover (no such token here)
            raise TokenSigningError(
                "This always-authenticate key needs a context PIN, which a PIN pad cannot give "
                "through this program.", hint="Use a key without CKA_ALWAYS_AUTHENTICATE.")
        assert isinstance(pin, str)
        return pin

    def _pin_incorrect(self, *, context: bool) -> PinIncorrectError | PinLockedError:
        return pin_refused(self._token, "context PIN" if context else "PIN")

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
                pin, _ = self._policy.resolve(self._secret_request)
        session = login(self._token, pin)
        self.login_count += 1 if self._login_required else 0
        try:
            with mapped_errors("finding the key again"):
                self._key = find_one_key(session, dict(self._key_template), self._key_criteria,
                                         self._token.label, "The key disappeared from the token.")
        except RolesAnywhereError:
            with contextlib.suppress(p11.PKCS11Error):
                session.close()
            raise
        self._session = session

    def _verify_pairing(self, message: bytes, signature: bytes) -> None:
        """The token exposed no public key: check the first real signature against the
        certificate, once. No extra test signature is ever made (one C_Sign per sign())."""
        from rolesanywhere_hsm.x509 import verify_signature

        if not verify_signature(self._certificate, message, signature):
            self._key_mismatch = True
            raise KeyLoadError(*MISMATCH)
        self._verify_pending = False

