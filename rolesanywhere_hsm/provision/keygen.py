"""`keygen`: a new key pair generated inside a token, fit for Roles Anywhere and nothing else.

The private key is created sensitive, never extractable, signing only and stored on the token
(CKA_TOKEN); the public key is stored beside it with the same CKA_ID and label, so that `csr`
and `import-certificate` find the pair again. An existing label or id is never reused: a
second object with the same label or id makes later `pkcs11:` URIs ambiguous, and on PIV
cards the id is a slot whose old key would be destroyed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pkcs11 import DEFAULT as _OMIT  # python-pkcs11: "leave this attribute out"
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11

from rolesanywhere_hsm.errors import TokenError, UsageError
from rolesanywhere_hsm.provision import keyspec
from rolesanywhere_hsm.provision.token import ProvisioningSession, open_token, parse_token_uri
from rolesanywhere_hsm.signers.base import SecretCallback

from rolesanywhere_hsm.signers.pkcs11.error_mapping import mapped_errors as _mapped_errors
from rolesanywhere_hsm.signers.pkcs11.selection import format_id as _hex_id

log = logging.getLogger("rolesanywhere_hsm.provision")

__all__ = ["GeneratedKey", "generate_key"]


@dataclass(frozen=True)
class GeneratedKey:
    """What keygen made: the URI of the private key (with module-path) and its public half."""

    uri: str
    label: str
    id: bytes
    key_type: str  # a keyspec.KEY_TYPES name
    public_key_info: bytes  # SubjectPublicKeyInfo, DER
    token: str


def _private_template(piv: bool, *, lock: bool = True) -> dict[Any, Any]:
    """`lock`: CKA_MODIFIABLE false, so that nobody can later turn CKA_DECRYPT (or anything
    else) on with C_SetAttributeValue; "signing only" would otherwise be a default, not a
    property. Tokens that refuse the attribute get the template without it (_generate)."""
    return {
        Attribute.MODIFIABLE: False if lock and not piv else _OMIT,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        # ykcs11 refuses a template naming CKA_EXTRACTABLE (CKR_ATTRIBUTE_TYPE_INVALID); a PIV
        # key can never leave its slot, and _check_policy reads the attribute back anyway.
        Attribute.EXTRACTABLE: _OMIT if piv else False,
        Attribute.SIGN: True,
        Attribute.DECRYPT: False,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
    }


def _public_template() -> dict[Any, Any]:
    # tpm2-pkcs11 fails key generation (CKR_GENERAL_ERROR, "User specified and TPM specified
    # attr mismatch") when the public template names CKA_VERIFY, CKA_ENCRYPT or CKA_WRAP, for
    # RSA and EC alike: left out, every module defaults them. The private key's template is
    # what keeps the pair signing-only (no DECRYPT, UNWRAP, DERIVE).
    return {Attribute.TOKEN: True, Attribute.PRIVATE: False,
            Attribute.VERIFY: _OMIT, Attribute.ENCRYPT: _OMIT, Attribute.WRAP: _OMIT}


def _check_can_generate(token: ProvisioningSession, spec: keyspec.KeySpec) -> None:
    """Refuse before touching the token when the module cannot make this key."""
    mechanism = keyspec.GENERATE_MECHANISMS[spec.key_type]
    offered = token.mechanisms()
    size_range = None
    if mechanism in offered:
        with _mapped_errors(f"reading the key sizes of token {token.label!r}"):
            try:
                info = token.token.slot.get_mechanism_info(Mechanism(mechanism))
                size_range = (int(info.min_key_length), int(info.max_key_length))
            except (p11.MechanismInvalid, p11.FunctionFailed):
                pass
    keyspec.check_generation(spec, offered, size_range, token.label)


def _ensure_unused(token: ProvisioningSession, label: str | None, key_id: bytes | None) -> None:
    for template, what in (({Attribute.LABEL: label}, f"label {label!r}") if label else (None, ""),
                           ({Attribute.ID: key_id}, f"id {_hex_id(key_id)}") if key_id else (None, "")):
        if template is None:
            continue
        found = token.objects(template)
        if found:
            classes = sorted({ObjectClass(o[Attribute.CLASS]).name.lower().replace("_", " ")
                              for o in found})
            raise UsageError(
                f"The token {token.label!r} already has an object with {what} "
                f"({', '.join(classes)}); keygen never overwrites or duplicates a key.",
                hint="Choose another --label/--id, or delete the old objects first "
                "(`pkcs11-tool --login --delete-object ...`).",
            )


# What a module answers to a template attribute it does not support. Only for these is the
# generation tried again, once, without CKA_MODIFIABLE (nothing was made: no PIN is involved).
_REFUSED_ATTRIBUTE = (p11.AttributeTypeInvalid, p11.AttributeValueInvalid, p11.TemplateInconsistent,
                      p11.AttributeReadOnly)


def _generate(token: ProvisioningSession, spec: keyspec.KeySpec, label: str, key_id: bytes) -> tuple[Any, Any]:
    def attempt(lock: bool) -> tuple[Any, Any]:
        common = dict(id=key_id, label=label, store=True,
                      capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                      private_template=_private_template(token.piv, lock=lock),
                      public_template=_public_template())
        if spec.key_type == "RSA":
            return token.session.generate_keypair(KeyType.RSA, spec.bits, **common)
        from pkcs11.util.ec import encode_named_curve_parameters

        params = token.session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(spec.curve)}, local=True)
        return params.generate_keypair(**common)

    with _mapped_errors(f"generating a {spec.name} key on token {token.label!r}"):
        if token.piv:
            return attempt(lock=False)
        try:
            return attempt(lock=True)
        except _REFUSED_ATTRIBUTE as exc:
            log.debug("token %r refused CKA_MODIFIABLE=false (%s); the key stays modifiable",
                      token.label, type(exc).__name__)
            return attempt(lock=False)


def _check_policy(token: ProvisioningSession, public: Any, private: Any, spec: keyspec.KeySpec) -> None:
    """A module may ignore a template attribute: check what the key really is, and undo the
    generation rather than leave an exportable key behind."""
    with _mapped_errors("reading the new key's attributes"):
        sensitive = private[Attribute.SENSITIVE]
        extractable = private[Attribute.EXTRACTABLE]
    if sensitive and not extractable:
        return
    with _mapped_errors("deleting the key the token made extractable"):
        private.destroy()
        public.destroy()
    raise TokenError(
        f"The token {token.label!r} made the {spec.name} key extractable or not sensitive, "
        "against the request; it was deleted again.",
        hint="Use a token (or token policy) that keeps generated keys inside.",
    )


def generate_key(
    token: str, key_type: str, label: str, key_id: str | bytes | None = None, *,
    pkcs11_lib: str | None = None, environ: Mapping[str, str] | None = None,
    prompt: SecretCallback | None = None, callback: SecretCallback | None = None,
    management_key_source: str | None = None,
) -> GeneratedKey:
    """Generate a `key_type` key pair labelled `label` on the token that the `pkcs11:` URI
    `token` selects; `key_id` (hex or bytes) or a fresh random CKA_ID.

    On a YubiKey (ykcs11) the key goes into the PIV slot that `key_id` names (required), with
    the card's management key from `management_key_source`; the module chooses the labels."""
    spec = keyspec.parse_key_type(key_type)
    selector = parse_token_uri(token, "--token")
    if selector.object is not None or selector.id is not None or selector.type is not None:
        raise UsageError("--token selects the token only; it must not name an object, id or type.",
                         hint="Give the label with --label and the id with --id.")
    if not label or not label.strip():
        raise UsageError("--label must not be empty.", hint="Name the key, e.g. --label workload.")
    wanted_id = keyspec.parse_key_id(key_id) if isinstance(key_id, str) else key_id
    with open_token(selector, pkcs11_lib=pkcs11_lib, environ=environ, prompt=prompt,
                    callback=callback, writes="generating a key",
                    management_key_source=management_key_source) as opened:
        if opened.piv:
            slot = keyspec.piv_slot(wanted_id)
            log.debug("PIV slot %s; the module labels the key itself", slot)
        _check_can_generate(opened, spec)
        _ensure_unused(opened, None if opened.piv else label, wanted_id)
        new_id = wanted_id or keyspec.new_key_id(
            lambda candidate: bool(opened.objects({Attribute.ID: candidate})))
        public, private = _generate(opened, spec, label, new_id)
        _check_policy(opened, public, private, spec)
        spki = opened.public_key_info(private, spec.key_type, new_id)
        with _mapped_errors("reading the new key's label"):
            actual_label = private[Attribute.LABEL] or label
        log.debug("generated %s key id %s on token %r", spec.name, _hex_id(new_id), opened.label)
        return GeneratedKey(uri=opened.uri(label=actual_label, key_id=new_id, type="private"),
                            label=actual_label, id=new_id, key_type=spec.name,
                            public_key_info=spki, token=opened.label)
