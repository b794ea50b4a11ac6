"""PURE: which token and which object a `pkcs11:` URI selects, over plain snapshots.

No python-pkcs11 here: the inventory takes snapshots of what a module shows (tokens, public
objects) and these functions decide, so that every rule is tested on plain data in
microseconds (pyHanko tests its token search the same way). Each `select_*` returns exactly
one thing or raises a SelectionError that lists what matched (or what is there), written for
the person who has to fix the URI.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from rolesanywhere_hsm.errors import SelectionError
from rolesanywhere_hsm.record import Record
from rolesanywhere_hsm.signers.pkcs11_uri import Pkcs11Uri, encode_id

__all__ = [
    "FLAG_LOGIN_REQUIRED",
    "FLAG_PROTECTED_AUTHENTICATION_PATH",
    "FLAG_TOKEN_INITIALIZED",
    "FLAG_USER_PIN_COUNT_LOW",
    "FLAG_USER_PIN_FINAL_TRY",
    "FLAG_USER_PIN_LOCKED",
    "FLAG_USER_PIN_TO_BE_CHANGED",
    "ObjectSnapshot",
    "TokenSnapshot",
    "format_id",
    "matching_tokens",
    "object_matches",
    "searched_tokens",
    "select_certificate",
    "select_object",
    "select_token",
    "token_matches",
]

# CK_TOKEN_INFO flags (PKCS#11 v2.40 section 3.2); the same values as python-pkcs11's TokenFlag.
FLAG_LOGIN_REQUIRED = 0x4
FLAG_USER_PIN_INITIALIZED = 0x8
FLAG_PROTECTED_AUTHENTICATION_PATH = 0x100
FLAG_TOKEN_INITIALIZED = 0x400
FLAG_USER_PIN_COUNT_LOW = 0x10000
FLAG_USER_PIN_FINAL_TRY = 0x20000
FLAG_USER_PIN_LOCKED = 0x40000
FLAG_USER_PIN_TO_BE_CHANGED = 0x80000


def format_id(ident: bytes | None) -> str:
    """CKA_ID as the URI printer writes it (`%01%A2`, pkcs11_uri.encode_id), or "(empty)"."""
    return encode_id(ident) if ident else "(empty)"


class TokenSnapshot(Record):
    """What CK_SLOT_INFO and CK_TOKEN_INFO say about one token; strings without the padding."""

    __slots__ = ("slot_id", "label", "manufacturer", "model", "serial", "slot_description",
                 "slot_manufacturer", "flags")
    _compared = __slots__
    slot_id: int
    label: str
    manufacturer: str
    model: str
    serial: str
    slot_description: str
    slot_manufacturer: str
    flags: int

    def __init__(self, slot_id: int, label: str, manufacturer: str = "", model: str = "", serial: str = "",
                 slot_description: str = "", slot_manufacturer: str = "",
                 flags: int = FLAG_TOKEN_INITIALIZED | FLAG_LOGIN_REQUIRED | FLAG_USER_PIN_INITIALIZED) -> None:
        self._set(slot_id=slot_id, label=label, manufacturer=manufacturer, model=model, serial=serial,
                  slot_description=slot_description, slot_manufacturer=slot_manufacturer, flags=flags)

    def describe(self) -> str:
        return f"slot {self.slot_id} ({self.label!r}, serial {self.serial})"

    def has(self, flag: int) -> bool:
        return bool(self.flags & flag)


class ObjectSnapshot(Record):
    """One object on a token: its class ("cert", "private", "public"), label and CKA_ID, and
    for a certificate its DER value (public, read without login)."""

    __slots__ = ("token", "object_class", "label", "id", "value")
    _compared = __slots__
    token: TokenSnapshot
    object_class: str
    label: str
    id: bytes
    value: bytes

    def __init__(self, token: TokenSnapshot, object_class: str, label: str, id: bytes,
                 value: bytes = b"") -> None:
        self._set(token=token, object_class=object_class, label=label, id=id, value=value)

    def describe(self, *, with_token: bool = False) -> str:
        text = f"label {self.label!r} id {format_id(self.id)}"
        return f"{text} on {self.token.describe()}" if with_token else text


def token_matches(token: TokenSnapshot, uri: Pkcs11Uri) -> bool:
    """RFC 7512: every token attribute the URI has must equal the token's (padding ignored)."""
    checks = (
        (uri.token, token.label),
        (uri.manufacturer, token.manufacturer),
        (uri.serial, token.serial),
        (uri.model, token.model),
        (uri.slot_description, token.slot_description),
        (uri.slot_manufacturer, token.slot_manufacturer),
    )
    if any(want is not None and want.rstrip() != have.rstrip() for want, have in checks):
        return False
    return uri.slot_id is None or uri.slot_id == token.slot_id


def matching_tokens(tokens: Iterable[TokenSnapshot], *uris: Pkcs11Uri | None) -> list[TokenSnapshot]:
    """The initialised tokens that every given URI's token attributes select."""
    return [t for t in tokens if t.has(FLAG_TOKEN_INITIALIZED)
            and all(u is None or token_matches(t, u) for u in uris)]


def _wanted(uri: Pkcs11Uri) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in uri.token_criteria().items()) or "(any token)"


def no_token_hint(module_path: str) -> str:
    """PURE: what to check when `module_path` shows no initialised token, for the module it
    is (a p11-kit client with no server behind it is not a SoftHSM problem)."""
    name = module_path.rsplit("/", 1)[-1].lower()
    if "p11-kit-client" in name:
        return ("The p11-kit client reaches no token: check that `p11-kit server` runs on the "
                "host, that P11_KIT_SERVER_ADDRESS names its socket, and that this user may open it.")
    if "p11-kit-proxy" in name:
        return ("p11-kit-proxy found no token in the modules registered with p11-kit "
                "(`rolesanywhere-hsm tokens` lists them): name your module with module-path= in "
                "the URI or --pkcs11-lib, and check that the token is there.")
    if "softhsm" in name:
        return "Check SOFTHSM2_CONF and the token directory it names (softhsm2-util --show-slots)."
    if "tpm2" in name:
        return ("Check TPM2_PKCS11_STORE (the store with the token) and TPM2_PKCS11_TCTI (the TPM), "
                "and that the token was created (docs/tpm.md).")
    return "Insert the token (for smart cards, check that pcscd runs)."


def _no_token(tokens: Sequence[TokenSnapshot], module_path: str) -> SelectionError:
    return SelectionError(f"The module {module_path} shows no initialised token.",
                          hint=no_token_hint(module_path))


def _no_matching_token(tokens: Sequence[TokenSnapshot], uri: Pkcs11Uri, module_path: str) -> SelectionError:
    present = "; ".join(t.describe() for t in tokens)
    return SelectionError(
        f"No token matches {_wanted(uri)}. The module {module_path} has: {present}.",
        hint="Fix token=, serial= or slot-id= in the URI (`rolesanywhere-hsm tokens` lists them).",
    )


def select_token(tokens: Sequence[TokenSnapshot], uri: Pkcs11Uri, module_path: str) -> TokenSnapshot:
    """The one initialised token that `uri`'s token and slot attributes select."""
    initialised = [t for t in tokens if t.has(FLAG_TOKEN_INITIALIZED)]
    if not initialised:
        raise _no_token(tokens, module_path)
    matching = matching_tokens(initialised, uri)
    if len(matching) == 1:
        return matching[0]
    if not matching:
        raise _no_matching_token(initialised, uri, module_path)
    found = "; ".join(t.describe() for t in matching)
    raise SelectionError(
        f"{len(matching)} tokens match {_wanted(uri)}: {found}.",
        hint="Add serial= or slot-id= to the URI to choose one.",
    )


def object_matches(obj: ObjectSnapshot, uri: Pkcs11Uri | None) -> bool:
    """The URI's object= (CKA_LABEL) and id= (CKA_ID), when present, equal the object's."""
    if uri is None:
        return True
    if uri.object is not None and uri.object != obj.label:
        return False
    return uri.id is None or uri.id == obj.id


def select_object(objects: Sequence[ObjectSnapshot], what: str, criteria: str, where: str,
                  hint: str) -> ObjectSnapshot:
    """Exactly one of `objects` (already filtered by the caller's criteria) or an error that
    lists them; `where` names the token(s) searched."""
    if len(objects) == 1:
        return objects[0]
    if not objects:
        raise SelectionError(f"No {what} matches {criteria or '(any)'} on {where}.", hint=hint)
    several_tokens = len({o.token for o in objects}) > 1
    listed = "; ".join(o.describe(with_token=several_tokens) for o in objects)
    raise SelectionError(
        f"{len(objects)} {what}s match {criteria or '(any)'} on {where}: {listed}.",
        hint="Add object= or id= to the URI so that exactly one matches"
        + (" (or token= / serial= to choose the token)." if several_tokens else "."),
    )


def _token_names(tokens: Sequence[TokenSnapshot]) -> str:
    if len(tokens) == 1:
        return f"token {tokens[0].label!r}"
    return "tokens " + ", ".join(repr(t.label) for t in tokens)


def searched_tokens(tokens: Sequence[TokenSnapshot], module_path: str,
                    *uris: Pkcs11Uri | None) -> list[TokenSnapshot]:
    """PURE: the initialised tokens every given URI selects (a certificate is then looked for
    on each), or the error that says why there are none: no initialised token, a URI that
    matches no token, or two URIs that select different tokens."""
    initialised = [t for t in tokens if t.has(FLAG_TOKEN_INITIALIZED)]
    if not initialised:
        raise _no_token(tokens, module_path)
    searched = matching_tokens(initialised, *uris)
    if not searched:
        for u in uris:
            if u is not None and not matching_tokens(initialised, u):
                raise _no_matching_token(initialised, u, module_path)
        raise SelectionError(
            "The certificate URI and the key URI select different tokens.",
            hint="Both must name the same token (or leave the token out of one of them).",
        )
    return searched


def select_certificate(
    tokens: Sequence[TokenSnapshot], certificates: Sequence[ObjectSnapshot], uri: Pkcs11Uri,
    module_path: str, *, key_uri: Pkcs11Uri | None = None,
) -> ObjectSnapshot:
    """The one certificate `uri` selects among `certificates` (every certificate on the tokens
    searched). With no token attributes in the URI every token is searched and a single
    holder is used. Decided before any login: certificates are public objects."""
    searched = searched_tokens(tokens, module_path, uri, key_uri)
    candidates = [c for c in certificates if c.object_class == "cert" and c.token in searched
                  and object_matches(c, uri)]
    if not candidates:
        on_tokens = [c for c in certificates if c.object_class == "cert" and c.token in searched]
        there = "; ".join(c.describe(with_token=len(searched) > 1) for c in on_tokens)
        hint = ("The token(s) hold: " + there + "." if there else
                "The token(s) hold no certificate; write one with `pkcs11-tool --write-object`.")
        raise SelectionError(
            f"No certificate matches {uri.object_criteria() or '(any)'} on {_token_names(searched)}.",
            hint=hint + " `rolesanywhere-hsm tokens` prints the URI of each.",
        )
    return select_object(candidates, "certificate", uri.object_criteria(), _token_names(searched),
                         hint="`rolesanywhere-hsm tokens` prints the URI of each certificate.")
