"""A logged-in read/write session on one token for provisioning, and what it does with a key:
find it, read its public half, sign with it.

The signer (signers/pkcs11.py) opens a key for a certificate it already has; provisioning
works on keys that have no certificate yet, so it opens the token itself, with the same
module loading, token selection, PIN policy (signers/pin.py: tried once, never retried) and
error mapping. The private key is never read: only CKA_MODULUS, CKA_PUBLIC_EXPONENT,
CKA_EC_PARAMS and CKA_EC_POINT, of the private key or of the public key with its CKA_ID.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pkcs11 import Attribute, Mechanism, ObjectClass, TokenFlag
from pkcs11 import exceptions as p11

from rolesanywhere_hsm.errors import (
    PinIncorrectError,
    PinLockedError,
    PinUnavailableError,
    Pkcs11UriError,
    RolesAnywhereError,
    TokenError,
    TokenSigningError,
    UsageError,
)
from rolesanywhere_hsm.provision import keyspec
from rolesanywhere_hsm.signers.base import SecretCallback
from rolesanywhere_hsm.signers.mechanisms import CKM_ECDSA, choose_signing_spec
from rolesanywhere_hsm.signers.secretpolicy import PinRequest, resolve_pin

from rolesanywhere_hsm.signers.pkcs11.error_mapping import already_logged_in, login
from rolesanywhere_hsm.signers.pkcs11.error_mapping import mapped_errors as _mapped_errors
from rolesanywhere_hsm.signers.pkcs11.error_mapping import pin_refused as _pin_refused
from rolesanywhere_hsm.signers.pkcs11.inventory import KEY_TYPES
from rolesanywhere_hsm.signers.pkcs11.opening import located_token
from rolesanywhere_hsm.signers.pkcs11.selection import format_id as _hex_id
from rolesanywhere_hsm.signers.pkcs11.signer import find_one_key
from rolesanywhere_hsm.signers.pkcs11_uri import Pkcs11Uri, is_pkcs11_uri, parse_pkcs11_uri

log = logging.getLogger("rolesanywhere_hsm.provision")

__all__ = ["ProvisioningSession", "TokenKey", "open_token", "parse_token_uri"]


def parse_token_uri(text: str, option: str) -> Pkcs11Uri:
    """A `pkcs11:` URI given to `option`, with the option named in errors."""
    if not is_pkcs11_uri(text):
        from rolesanywhere_hsm.redact import redact

        raise Pkcs11UriError(f"{option} {redact(text)!r} is not a pkcs11: URI.",
                             hint=f"Example: {option} 'pkcs11:token=mytoken'.")
    try:
        return parse_pkcs11_uri(text)
    except Pkcs11UriError as exc:
        raise Pkcs11UriError(f"{option}: {exc.message}", hint=exc.hint) from None


@dataclass(frozen=True)
class TokenKey:
    """A private key found on the open token, with its public half as SubjectPublicKeyInfo."""

    key: Any  # pkcs11.PrivateKey
    label: str
    id: bytes
    key_type: str  # "RSA" or "EC"
    public_key_info: bytes
    always_authenticate: bool


class ProvisioningSession:
    """One token, logged in (when it needs a login) on a read/write session.

    Built by `open_token`; `uri()` prints URIs that select objects on this token again,
    carrying the module path (so the printed URI works without --pkcs11-lib) and the
    pin-source the user gave (never a pin-value)."""

    def __init__(self, *, module_path: str, token: Any, session: Any, selector: Pkcs11Uri,
                 pin: str | None, piv: bool = False) -> None:
        self.module_path = module_path
        self.piv = piv  # a PIV card: fixed slots (CKA_ID), labels chosen by the module
        self.token = token
        self.session = session
        self._selector = selector
        self._pin = pin  # for the context login of an always-authenticate key; see sign()

    def __repr__(self) -> str:
        return f"ProvisioningSession(module={self.module_path!r}, token={self.token.label!r})"

    @property
    def label(self) -> str:
        return self.token.label

    def mechanisms(self) -> set[int]:
        with _mapped_errors(f"listing the mechanisms of token {self.label!r}"):
            return {int(m) for m in self.token.slot.get_mechanisms()}

    def uri(self, *, label: str | None, key_id: bytes | None, type: str | None) -> str:
        serial = self.token.serial
        serial = serial.decode("ascii", "replace") if isinstance(serial, bytes) else serial
        return Pkcs11Uri(
            token=self.label, serial=serial.strip() or None, object=label or None, id=key_id or None,
            type=type, module_path=self.module_path, pin_source=self._selector.pin_source,
        ).to_string()

    def objects(self, template: dict[Any, Any]) -> list[Any]:
        with _mapped_errors(f"reading objects on token {self.label!r}"):
            return list(self.session.get_objects(template))

    def find_private_key(self, uri: Pkcs11Uri) -> TokenKey:
        """The one private key that `uri`'s object=/id= select (only the key when neither)."""
        if uri.type not in (None, "private"):
            raise Pkcs11UriError(f"The key URI says type={uri.type}; it must be type=private or none.",
                                 hint="Give the URI that keygen printed.")
        with _mapped_errors(f"finding the key on token {self.label!r}"):
            template: dict[Any, Any] = {Attribute.CLASS: ObjectClass.PRIVATE_KEY}
            if uri.object is not None:
                template[Attribute.LABEL] = uri.object
            if uri.id is not None:
                template[Attribute.ID] = uri.id
            key = find_one_key(self.session, template, uri.object_criteria(), self.label,
                               "List the keys with `pkcs11-tool --login --list-objects --type privkey`.")
            key_type = KEY_TYPES.get(key[Attribute.KEY_TYPE])
            if key_type not in ("RSA", "EC"):
                raise TokenError(f"The key {uri.object_criteria() or ''} on token {self.label!r} is "
                                 "neither RSA nor EC.", hint="Roles Anywhere takes RSA and EC keys.")
            always_auth = False
            with contextlib.suppress(p11.AttributeTypeInvalid, p11.AttributeSensitive):
                always_auth = bool(key[Attribute.ALWAYS_AUTHENTICATE])
            label, ident = key[Attribute.LABEL] or "", bytes(key[Attribute.ID] or b"")
            spki = self.public_key_info(key, key_type, ident)
        return TokenKey(key, label, ident, key_type, spki, always_auth)

    def public_key_info(self, key: Any, key_type: str, ident: bytes) -> bytes:
        """The key's SubjectPublicKeyInfo from public attributes: the private key's own
        (tpm2-pkcs11, RSA on SoftHSM), else the public key object with the same CKA_ID
        (SoftHSM EC private keys have no CKA_EC_POINT)."""
        wanted = ((Attribute.MODULUS, Attribute.PUBLIC_EXPONENT) if key_type == "RSA"
                  else (Attribute.EC_PARAMS, Attribute.EC_POINT))
        candidates = [key]
        if ident:
            candidates += self.objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: ident})
        for obj in candidates:
            values = []
            for attribute in wanted:
                try:
                    values.append(bytes(obj[attribute] or b""))
                except (p11.AttributeTypeInvalid, p11.AttributeSensitive, p11.FunctionFailed):
                    values.append(b"")
            if all(values):
                if key_type == "RSA":
                    return keyspec.rsa_spki(values[0], values[1])
                return keyspec.ec_spki(values[0], values[1])
        raise TokenError(
            f"The token {self.label!r} shows no public key for the key with id {_hex_id(ident)} "
            "(no CKA_MODULUS/CKA_EC_POINT, and no public key object with the same id).",
            hint="Import the public key (or a certificate) with the key's id, or regenerate the "
            "key with keygen, which keeps the public key.",
        )

    def sign(self, key: TokenKey, message: bytes, *, ecdsa_sha384: bool = False) -> bytes:
        """Sign `message` with SHA-256, as the signer does (same mechanism choice), and return
        the signature in X.509 encoding (PKCS#1 v1.5, or DER ECDSA-Sig-Value).

        `ecdsa_sha384` (EC keys): SHA-384 hashed on the host and raw CKM_ECDSA, for requests
        that a CA expects signed with the hash matching a P-384 key."""
        mechanisms = self.mechanisms()
        spec = choose_signing_spec(key.key_type, mechanisms)
        if ecdsa_sha384:
            if key.key_type != "EC" or CKM_ECDSA not in mechanisms:
                raise TokenSigningError(
                    f"The token {self.label!r} cannot make an ECDSA signature over SHA-384 with "
                    f"this {key.key_type} key (needs an EC key and the CKM_ECDSA mechanism).",
                    hint="Use --digest sha256.")
            spec = spec._replace(mechanism=CKM_ECDSA, hash_on_host=False)
            message = hashlib.sha384(message).digest()
        context_pin = self._pin if key.always_authenticate else None
        with _mapped_errors(f"signing with the key with id {_hex_id(key.id)}", TokenSigningError):
            try:
                raw = key.key.sign(spec.data_to_sign(message), mechanism=Mechanism(spec.mechanism),
                                   pin=context_pin)
            except p11.PinIncorrect:
                raise _pin_refused(self.token, "context PIN") from None
        return spec.wire_signature(raw)


def _pin_for(token: Any, selector: Pkcs11Uri, environ: Mapping[str, str] | None,
             prompt: SecretCallback | None, callback: SecretCallback | None) -> Any:
    """The user PIN from the usual sources (signers/pin.py), refusing an empty one."""
    request = PinRequest(
        description=f"PIN for token {token.label!r}",
        pin_value=selector.pin_value, pin_source=selector.pin_source,
        protected_authentication_path=bool(token.flags & TokenFlag.PROTECTED_AUTHENTICATION_PATH),
        callback=callback, environ=environ, prompt=prompt,
    )
    pin, source = resolve_pin(request)
    log.debug("PIN for token %r from %s", token.label, source.value)
    if pin == "":
        raise PinUnavailableError(
            f"The PIN from {source.value} is empty; an empty PIN is never sent to the token.",
            hint="Give the token's user PIN (pin-source in the URI, RAH_PKCS11_PIN, or the prompt).",
        )
    return pin


def _login_management_key(token: Any, key_hex: str) -> Any:
    """C_OpenSession(RW) + C_Login as CKU_SO with the PIV management key in hex (ykcs11's
    convention), once."""
    with _mapped_errors(f"authenticating to token {token.label!r} with the management key"):
        try:
            return token.open(rw=True, so_pin=key_hex)
        except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange, p11.ArgumentsBad):
            raise PinIncorrectError(
                f"The token {token.label!r} refused the management key; it was tried once.",
                hint="Check the --management-key-source content (the card's current management "
                "key, in hex).",
            ) from None
        except p11.UserAlreadyLoggedIn:
            raise already_logged_in(token, provisioning=True) from None


def _management_key(source: str, environ: Mapping[str, str] | None) -> str:
    from rolesanywhere_hsm.signers.pin import read_pin_source

    return keyspec.parse_management_key(read_pin_source(source, environ))


def _piv_write_refusal(token: Any, writes: str, hint: str) -> TokenError:
    return TokenError(f"The token {token.label!r} is a PIV card: {writes} there {hint}",
                      hint="See docs/onboarding.md, YubiKey: `ykman piv keys generate` and `ykman piv "
                      "certificates import` do the same; `rolesanywhere-hsm csr` works with the "
                      "card's keys.")


@contextlib.contextmanager
def open_token(
    selector: Pkcs11Uri, *, pkcs11_lib: str | None = None, environ: Mapping[str, str] | None = None,
    prompt: SecretCallback | None = None, callback: SecretCallback | None = None,
    writes: str | None = None, management_key_source: str | None = None,
) -> Iterator[ProvisioningSession]:
    """Load the module and select the one token `selector` names (the first half of opening a
    token key, `signers.pkcs11.opening.located_token`, as `locate_pkcs11` does it: no secret),
    then open a read/write session and log in; on exit log out, close and finalise.

    `writes` (what the caller will write, e.g. "generating a key") matters for PIV cards:
    their slots are written with the card's management key, not the PIN, so the session logs in
    as the security officer with the key that `management_key_source` (file:, env:, cmd:)
    gives, through ykcs11 only. Without a source, or through another module, a PIV card is
    refused before any secret is used. Every other token gets the user PIN."""
    with located_token(selector, pkcs11_lib, environ) as (module_path, lib, live):
        with _logged_in(module_path, lib, live.token, selector, environ=environ, prompt=prompt,
                        callback=callback, writes=writes,
                        management_key_source=management_key_source) as opened:
            yield opened


@contextlib.contextmanager
def _logged_in(module_path: str, lib: Any, token: Any, selector: Pkcs11Uri, *,
               environ: Mapping[str, str] | None, prompt: SecretCallback | None,
               callback: SecretCallback | None, writes: str | None,
               management_key_source: str | None) -> Iterator[ProvisioningSession]:
    """The second half for provisioning: the read/write session and its one login."""
    session = None
    try:
        piv = keyspec.is_piv_card(lib.manufacturer_id, token.manufacturer_id)
        if management_key_source is not None and not (piv and writes):
            raise UsageError(
                "--management-key-source is only for writing to PIV cards (keygen and "
                f"import-certificate on a YubiKey); token {token.label!r} "
                + ("is not one." if not piv else "is only read here."),
                hint="Leave it out; the user PIN is used.")
        if piv and writes:
            if not lib.manufacturer_id.strip().startswith("Yubico"):
                raise _piv_write_refusal(token, writes, "is supported through Yubico's ykcs11 "
                                         "module only (libykcs11.so), with the management key.")
            if management_key_source is None:
                raise _piv_write_refusal(
                    token, writes, "needs the card's management key, which is never assumed "
                    "(not even the factory default): give --management-key-source file:/path or "
                    "env:NAME.")
            key_hex = _management_key(management_key_source, environ)
            session = _login_management_key(token, key_hex)
            del key_hex
            log.debug("module %s, token %r, read/write session as security officer (management "
                      "key)", module_path, token.label)
            yield ProvisioningSession(module_path=module_path, token=token, session=session,
                                      selector=selector, pin=None, piv=True)
            return
        if token.flags & TokenFlag.USER_PIN_LOCKED:
            raise PinLockedError(f"The user PIN of token {token.label!r} is locked (not tried).",
                                 hint="Unblock it with the PUK or security officer PIN.")
        pin = None
        if token.flags & TokenFlag.LOGIN_REQUIRED:
            pin = _pin_for(token, selector, environ, prompt, callback)
        session = login(token, pin, rw=True)
        log.debug("module %s, token %r, read/write session%s", module_path, token.label,
                  ", logged in" if pin is not None else "")
        yield ProvisioningSession(module_path=module_path, token=token, session=session,
                                  selector=selector, pin=pin if isinstance(pin, str) else None,
                                  piv=piv)
    finally:
        if session is not None:
            with contextlib.suppress(p11.PKCS11Error, RolesAnywhereError):
                session.close()
