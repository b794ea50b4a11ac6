"""What a module shows, read into plain snapshots: tokens, certificates, and (after a login)
keys, with the URI that selects each certificate.

The readers here are the only place that walks slots and objects; `selection` decides over
what they return, the signer opens what was selected, and the CLI (`tokens`,
`read-certificate-data`) renders the data. Nothing here shapes JSON or text for people.
"""

from __future__ import annotations

import hashlib
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from pkcs11 import Attribute, CertificateType, KeyType, ObjectClass, TokenFlag
from pkcs11 import exceptions as p11

from rolesanywhere_hsm import x509 as _x509
from rolesanywhere_hsm.errors import Pkcs11UriError, SelectionError
from rolesanywhere_hsm.record import Record
from rolesanywhere_hsm.signers.pkcs11.error_mapping import mapped_errors
from rolesanywhere_hsm.signers.pkcs11.modules import loaded_module, resolve_module_path
from rolesanywhere_hsm.signers.pkcs11.selection import (
    ObjectSnapshot,
    TokenSnapshot,
    matching_tokens,
    object_matches,
)
from rolesanywhere_hsm.signers.pkcs11_uri import Pkcs11Uri, is_pkcs11_uri, parse_pkcs11_uri

# python-pkcs11's key types as x509.CertificateInfo names them ("other" for the rest).
KEY_TYPES = {KeyType.RSA: "RSA", KeyType.EC: "EC", KeyType.ML_DSA: "ML-DSA"}

__all__ = [
    "CertificateEntry",
    "KeyEntry",
    "LiveToken",
    "ModuleEntry",
    "Pairing",
    "SlotEntry",
    "TokenEntry",
    "inventory_module",
    "is_attestation",
    "pair_certificate",
    "take_inventory",
    "TokenCertificate",
    "check_library",
    "list_certificates",
    "list_token_certificates",
    "parse_if_uri",
    "read_certificates",
    "read_tokens",
    "selecting_uri",
    "token_serial",
]


def token_serial(token: Any) -> str:
    """CK_TOKEN_INFO serialNumber as text (python-pkcs11 gives bytes or str by version)."""
    serial = token.serial
    text = serial.decode("ascii", "replace") if isinstance(serial, bytes) else str(serial)
    return text.rstrip()


class LiveToken(Record):
    """A snapshot and the python-pkcs11 token it was read from (to open sessions on)."""

    __slots__ = ("snapshot", "token")
    _compared = __slots__
    snapshot: TokenSnapshot
    token: Any

    def __init__(self, snapshot: TokenSnapshot, token: Any) -> None:
        self._set(snapshot=snapshot, token=token)


def snapshot_token(token: Any) -> TokenSnapshot:
    slot = token.slot
    return TokenSnapshot(
        slot_id=slot.slot_id, label=token.label.rstrip(), manufacturer=token.manufacturer_id.rstrip(),
        model=token.model.rstrip(), serial=token_serial(token),
        slot_description=slot.slot_description.rstrip(),
        slot_manufacturer=slot.manufacturer_id.rstrip(), flags=int(token.flags),
    )


def read_tokens(lib: Any, *, initialised_only: bool = True) -> list[LiveToken]:
    """Every token present in the module's slots (SoftHSM's free slot has an uninitialised
    one: left out unless asked for)."""
    found = []
    with mapped_errors("listing the slots"):
        for slot in lib.get_slots(token_present=True):
            try:
                token = slot.get_token()
            except (p11.TokenNotPresent, p11.TokenNotRecognised):
                continue
            if initialised_only and not token.flags & TokenFlag.TOKEN_INITIALIZED:
                continue
            found.append(LiveToken(snapshot_token(token), token))
    return found


def check_library(lib: Any, uri: Pkcs11Uri, module_path: str) -> None:
    """The URI's library-* attributes, if any, must describe the loaded module."""
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


def read_objects(session: Any, snapshot: TokenSnapshot, object_class: Any, name: str,
                 *, with_value: bool = False) -> list[ObjectSnapshot]:
    """Label, CKA_ID (and for certificates the DER value) of every object of a class the
    session can see. Never reads a private key's value or any sensitive attribute."""
    template: dict[Any, Any] = {Attribute.CLASS: object_class}
    if object_class == ObjectClass.CERTIFICATE:
        template[Attribute.CERTIFICATE_TYPE] = CertificateType.X_509
    found = []
    for obj in session.get_objects(template):
        value = bytes(obj[Attribute.VALUE]) if with_value else b""
        found.append(ObjectSnapshot(snapshot, name, obj[Attribute.LABEL] or "",
                                    bytes(obj[Attribute.ID] or b""), value))
    return found


def read_certificates(tokens: list[LiveToken]) -> list[ObjectSnapshot]:
    """Every X.509 certificate on `tokens`, read in a public session (no login, no PIN)."""
    found: list[ObjectSnapshot] = []
    for live in tokens:
        with mapped_errors(f"listing certificates on token {live.snapshot.label!r}"):
            session = live.token.open()
            try:
                found += read_objects(session, live.snapshot, ObjectClass.CERTIFICATE, "cert",
                                      with_value=True)
            finally:
                session.close()
    return found


def selecting_uri(certificate: ObjectSnapshot, others: list[ObjectSnapshot],
                  tokens: list[TokenSnapshot], module_path: str | None = None) -> Pkcs11Uri:
    """The shortest URI that selects exactly `certificate` among `others` (every certificate
    the module shows) on `tokens`, with type=cert and, when given, the module-path: ready to
    paste into --certificate. Prefers the token label, then adds the serial (several tokens
    with one label); on the token, id alone, then object alone, then both."""
    token = certificate.token
    token_choices = [Pkcs11Uri(token=token.label), Pkcs11Uri(token=token.label, serial=token.serial),
                     Pkcs11Uri(token=token.label, serial=token.serial, slot_id=token.slot_id)]
    token_part = token_choices[-1]
    for candidate in token_choices:
        if matching_tokens(tokens, candidate) == [token]:
            token_part = candidate
            break
    on_token = [o for o in others if o.token == token and o.object_class == "cert"]
    object_choices = []
    if certificate.id:
        object_choices.append({"id": certificate.id})
    if certificate.label:
        object_choices.append({"object": certificate.label})
    object_choices.append({"object": certificate.label or None, "id": certificate.id or None})
    chosen = object_choices[-1]
    for choice in object_choices:
        probe = Pkcs11Uri(**choice)
        if [o for o in on_token if object_matches(o, probe)] == [certificate]:
            chosen = choice
            break
    return token_part.with_changes(type="cert", module_path=module_path, **chosen)


class TokenCertificate(Record):
    """A certificate found on a token, with the URI that selects exactly it."""

    __slots__ = ("der", "label", "id", "token", "serial", "uri")
    _compared = __slots__
    der: bytes
    label: str
    id: bytes
    token: str
    serial: str
    uri: str

    def __init__(self, der: bytes, label: str, id: bytes, token: str, serial: str, uri: str) -> None:
        self._set(der=der, label=label, id=id, token=token, serial=serial, uri=uri)


def parse_if_uri(value: str | None, option: str) -> Pkcs11Uri | None:
    """`value` parsed when it is a pkcs11: URI, None when it is something else (a file)."""
    if value is None or not is_pkcs11_uri(value):
        return None
    try:
        return parse_pkcs11_uri(value)
    except Pkcs11UriError as exc:
        raise Pkcs11UriError(f"{option}: {exc.message}", hint=exc.hint) from None


def list_token_certificates(
    uri: str, *, pkcs11_lib: str | None = None, environ: Mapping[str, str] | None = None,
    require_match: bool = False,
) -> list[TokenCertificate]:
    """Every X.509 certificate that `uri` matches, on every token it matches, read without
    login (certificates are public objects), each with the shortest URI (module-path
    included) that selects exactly it. With `require_match`, matching nothing is a
    SelectionError naming the tokens that are there (read-certificate-data)."""
    parsed = parse_if_uri(uri, "--certificate")
    if parsed is None:
        raise Pkcs11UriError("This is not a pkcs11: URI.", hint="Example: pkcs11:token=mytoken")
    module_path = resolve_module_path((parsed,), pkcs11_lib, environ)
    with loaded_module(module_path) as lib:
        check_library(lib, parsed, module_path)
        tokens = read_tokens(lib)
        snapshots = [t.snapshot for t in tokens]
        certificates = read_certificates(tokens)
    found = []
    for cert in certificates:
        if not (matching_tokens([cert.token], parsed) and object_matches(cert, parsed)):
            continue
        selector = selecting_uri(cert, certificates, snapshots, module_path)
        found.append(TokenCertificate(cert.value, cert.label, cert.id, cert.token.label,
                                      cert.token.serial, selector.to_string()))
    if require_match and not found:
        present = "; ".join(t.describe() for t in snapshots) or "no initialised token"
        raise SelectionError(
            f"No certificate matches {parsed} in the module {module_path}, which has: {present}.",
            hint="`rolesanywhere-hsm tokens` lists every token, certificate and its URI.",
        )
    return found


def list_certificates(
    uri: str, pkcs11_lib: str | None = None, environ: Mapping[str, str] | None = None,
    *, require_match: bool = False,
) -> list[dict[str, str]]:
    """`read-certificate-data` for a pkcs11: URI (docs/cli.md): per matching certificate its
    SHA-1 fingerprint, subject, issuer, serial (hex) and the URI selecting it. JSON-ready;
    no PIN is asked for."""
    result = []
    for found in list_token_certificates(uri, pkcs11_lib=pkcs11_lib, environ=environ,
                                         require_match=require_match):
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


# ---------------------------------------------------------------------------------------------
# The whole inventory, for `tokens` (and `doctor`): modules, slots, tokens, certificates, keys.

ATTESTATION_ISSUER = "Yubico PIV Attestation"


class KeyEntry(Record):
    """A key object as the session saw it: public attributes only."""

    __slots__ = ("object_class", "label", "id", "key_type", "public_value", "always_authenticate",
                 "needs_login", "protection")
    _compared = __slots__
    object_class: str  # "private" or "public"
    label: str
    id: bytes
    key_type: str  # "RSA", "EC" or "other"
    public_value: bytes | None  # CKA_MODULUS / CKA_EC_POINT, for pairing
    always_authenticate: bool | None  # private keys only
    needs_login: bool | None  # CKA_PRIVATE of a private key
    # The auditor's view of a private key: (attribute name, value or None when the token does
    # not say) for CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_NEVER_EXTRACTABLE, CKA_ALWAYS_SENSITIVE,
    # CKA_LOCAL, in that order (PROTECTION_ATTRIBUTES).
    protection: tuple[tuple[str, bool | None], ...]

    def __init__(self, object_class: str, label: str, id: bytes, key_type: str, public_value: bytes | None,
                 always_authenticate: bool | None = None, needs_login: bool | None = None,
                 protection: tuple[tuple[str, bool | None], ...] = ()) -> None:
        self._set(object_class=object_class, label=label, id=id, key_type=key_type,
                  public_value=public_value, always_authenticate=always_authenticate,
                  needs_login=needs_login, protection=protection)


PROTECTION_ATTRIBUTES = ("SENSITIVE", "EXTRACTABLE", "NEVER_EXTRACTABLE", "ALWAYS_SENSITIVE", "LOCAL")


class Pairing(Record):
    """How a certificate pairs with the token's keys (PURE result of `pair_certificate`).

    `private_key`: "paired" (a private key with the certificate's CKA_ID and, where the token
    shows it, the same public key), "mismatch" (same CKA_ID, another public key), "none", or
    "not listed" (private keys are hidden until login). `public_key`: "paired", "mismatch" or
    "none" for the public key object with that CKA_ID.
    """

    __slots__ = ("private_key", "public_key", "always_authenticate", "needs_login")
    _compared = __slots__
    private_key: str
    public_key: str
    always_authenticate: bool | None
    needs_login: bool | None

    def __init__(self, private_key: str, public_key: str, always_authenticate: bool | None = None,
                 needs_login: bool | None = None) -> None:
        self._set(private_key=private_key, public_key=public_key, always_authenticate=always_authenticate,
                  needs_login=needs_login)


def pair_certificate(info: _x509.CertificateInfo, cert_id: bytes, keys: list[KeyEntry],
                     private_keys_listed: bool) -> Pairing:
    """PURE: pair a certificate with the keys of its token, by CKA_ID and public key."""
    from rolesanywhere_hsm.signers.pkcs11.pairing import same_public_key

    def status(candidates: list[KeyEntry]) -> str:
        if not candidates:
            return "none"
        for key in candidates:
            if key.key_type == info.key_type and (
                    key.public_value is None or same_public_key(key.public_value, info)):
                return "paired"
        return "mismatch"

    same_id = [k for k in keys if cert_id and k.id == cert_id]
    privates = [k for k in same_id if k.object_class == "private"]
    publics = [k for k in same_id if k.object_class == "public"]
    private = status(privates)
    if private == "none" and not private_keys_listed:
        private = "not listed"
    paired = next((k for k in privates if status([k]) == "paired"), None)
    return Pairing(private, status(publics), paired.always_authenticate if paired else None,
                   paired.needs_login if paired else None)


class CertificateEntry(Record):
    """One certificate on a token, what it says, how it pairs, and the URI that selects it."""

    __slots__ = ("object", "info", "not_before", "not_after", "attestation", "pairing", "uri")
    _compared = __slots__
    object: ObjectSnapshot
    info: _x509.CertificateInfo
    not_before: Any  # datetime
    not_after: Any
    attestation: bool
    pairing: Pairing
    uri: str

    def __init__(self, object: ObjectSnapshot, info: _x509.CertificateInfo, not_before: Any, not_after: Any,
                 attestation: bool, pairing: Pairing, uri: str) -> None:
        self._set(object=object, info=info, not_before=not_before, not_after=not_after,
                  attestation=attestation, pairing=pairing, uri=uri)


class TokenEntry(Record):
    __slots__ = ("token", "certificates", "keys", "logged_in", "error")
    _compared = __slots__
    token: TokenSnapshot
    certificates: tuple[CertificateEntry, ...]
    keys: tuple[KeyEntry, ...]
    logged_in: bool
    error: str | None  # e.g. a refused PIN: the listing goes on without private keys

    def __init__(self, token: TokenSnapshot, certificates: tuple[CertificateEntry, ...] = (),
                 keys: tuple[KeyEntry, ...] = (), logged_in: bool = False, error: str | None = None) -> None:
        self._set(token=token, certificates=certificates, keys=keys, logged_in=logged_in, error=error)


class SlotEntry(Record):
    __slots__ = ("slot_id", "description", "token_present", "token_initialised")
    _compared = __slots__
    slot_id: int
    description: str
    token_present: bool
    token_initialised: bool

    def __init__(self, slot_id: int, description: str, token_present: bool, token_initialised: bool) -> None:
        self._set(slot_id=slot_id, description=description, token_present=token_present,
                  token_initialised=token_initialised)


class ModuleEntry(Record):
    __slots__ = ("path", "reason", "library_description", "library_manufacturer", "library_version",
                 "slots", "tokens", "error", "stderr")
    _compared = __slots__
    path: str
    reason: str  # "--pkcs11-lib", "RAH_PKCS11_MODULE", "registered with p11-kit", "usual path"
    library_description: str
    library_manufacturer: str
    library_version: str
    slots: tuple[SlotEntry, ...]
    tokens: tuple[TokenEntry, ...]
    error: str | None
    stderr: tuple[str, ...]  # what the module printed while we listed it (contained)

    def __init__(self, path: str, reason: str, library_description: str = "", library_manufacturer: str = "",
                 library_version: str = "", slots: tuple[SlotEntry, ...] = (),
                 tokens: tuple[TokenEntry, ...] = (), error: str | None = None,
                 stderr: tuple[str, ...] = ()) -> None:
        self._set(path=path, reason=reason, library_description=library_description,
                  library_manufacturer=library_manufacturer, library_version=library_version, slots=slots,
                  tokens=tokens, error=error, stderr=stderr)


PinFor = Callable[[TokenSnapshot], "str | None"]
"""Asked once per token that requires login: the PIN to log in with, or None to list public
objects only. The CLI decides where it comes from."""


def is_attestation(info: _x509.CertificateInfo, label: str) -> bool:
    """YubiKey attestation certificates: issued by "Yubico PIV Attestation" (the slot
    attestation) or labelled "... Attestation" (ykcs11's f9 certificate)."""
    return ATTESTATION_ISSUER in info.issuer or "attestation" in label.lower()


def _validity(der: bytes) -> tuple[Any, Any]:
    from asn1crypto import x509 as asn1_x509

    validity = asn1_x509.Certificate.load(der)["tbs_certificate"]["validity"]
    return validity["not_before"].native, validity["not_after"].native


def _read_keys(session: Any, token: TokenSnapshot) -> list[KeyEntry]:
    from rolesanywhere_hsm.signers.pkcs11.pairing import _public_attribute

    keys = []
    for object_class, name in ((ObjectClass.PRIVATE_KEY, "private"), (ObjectClass.PUBLIC_KEY, "public")):
        for obj in session.get_objects({Attribute.CLASS: object_class}):
            key_type = KEY_TYPES.get(obj[Attribute.KEY_TYPE], "other")
            attribute = Attribute.MODULUS if key_type == "RSA" else Attribute.EC_POINT
            value = _public_attribute(obj, attribute) if key_type != "other" else None
            always = needs_login = None
            protection: list[tuple[str, bool | None]] = []
            if name == "private":
                with _suppressed_attribute_errors():
                    always = bool(obj[Attribute.ALWAYS_AUTHENTICATE])
                with _suppressed_attribute_errors():
                    needs_login = bool(obj[Attribute.PRIVATE])
                for attribute in PROTECTION_ATTRIBUTES:
                    flag: bool | None = None
                    with _suppressed_attribute_errors():
                        flag = bool(obj[getattr(Attribute, attribute)])
                    protection.append((attribute, flag))
            keys.append(KeyEntry(name, obj[Attribute.LABEL] or "", bytes(obj[Attribute.ID] or b""),
                                 key_type, value, always, needs_login, tuple(protection)))
    return keys


def _suppressed_attribute_errors() -> Any:
    return contextlib.suppress(p11.AttributeTypeInvalid, p11.AttributeSensitive)


def _inventory_token(live: LiveToken, module_path: str, all_tokens: list[TokenSnapshot],
                     all_certificates: list[ObjectSnapshot], pin_for: PinFor | None) -> TokenEntry:
    from rolesanywhere_hsm.errors import RolesAnywhereError
    from rolesanywhere_hsm.signers.pkcs11.error_mapping import login

    snapshot = live.snapshot
    error = None
    logged_in = False
    pin = None
    try:
        if pin_for is not None and snapshot.has(TokenFlag.LOGIN_REQUIRED):
            pin = pin_for(snapshot)
        session = login(live.token, pin) if pin is not None else live.token.open()
        logged_in = pin is not None
    except RolesAnywhereError as exc:  # a refused PIN: reported, never retried
        error = exc.diagnostics()
        with mapped_errors(f"listing keys on token {snapshot.label!r}"):
            session = live.token.open()
    finally:
        pin = None
    try:
        with mapped_errors(f"listing keys on token {snapshot.label!r}"):
            keys = _read_keys(session, snapshot)
    finally:
        with contextlib.suppress(p11.PKCS11Error):
            session.close()
    private_listed = logged_in or not snapshot.has(TokenFlag.LOGIN_REQUIRED)
    entries = []
    for cert in (c for c in all_certificates if c.token == snapshot):
        try:
            info = _x509.certificate_info(cert.value)
            not_before, not_after = _validity(cert.value)
        except Exception:  # noqa: BLE001 (an unparsable object is listed as such, not fatal)
            continue
        entries.append(CertificateEntry(
            object=cert, info=info, not_before=not_before, not_after=not_after,
            attestation=is_attestation(info, cert.label),
            pairing=pair_certificate(info, cert.id, keys, private_listed),
            uri=selecting_uri(cert, all_certificates, all_tokens, module_path).to_string(),
        ))
    return TokenEntry(snapshot, tuple(entries), tuple(keys), logged_in, error)


def inventory_module(path: str, reason: str = "--pkcs11-lib", *, pin_for: PinFor | None = None,
                     contain_stderr: bool = False) -> ModuleEntry:
    """Everything one module shows: library info, slots, tokens, certificates (public, no
    PIN), keys (public ones; private ones too when `pin_for` gives a PIN or the token needs
    no login). A module that fails to load or list is an entry with `error`, not an
    exception: `tokens` goes on with the next module."""
    from rolesanywhere_hsm.errors import RolesAnywhereError
    from rolesanywhere_hsm.signers.pkcs11.modules import captured_stderr

    noise: list[str] = []
    with captured_stderr() if contain_stderr else contextlib.nullcontext() as captured:
        try:
            entry = _inventory_module(path, reason, pin_for)
        except RolesAnywhereError as exc:
            entry = ModuleEntry(path, reason, error=exc.diagnostics())
    if contain_stderr and captured is not None:
        noise = list(captured)
    if noise:
        entry = entry._replace(stderr=tuple(noise[:20]))
    return entry


def _inventory_module(path: str, reason: str, pin_for: PinFor | None) -> ModuleEntry:
    with loaded_module(path) as lib:
        with mapped_errors(f"listing the slots of {path}"):
            version = lib.library_version
            slots = []
            for slot in lib.get_slots():
                present = bool(slot.flags & 0x1)  # CKF_TOKEN_PRESENT
                initialised = False
                if present:
                    with _suppressed_token_errors():
                        initialised = bool(slot.get_token().flags & TokenFlag.TOKEN_INITIALIZED)
                slots.append(SlotEntry(slot.slot_id, slot.slot_description.rstrip(), present, initialised))
        tokens = read_tokens(lib)
        snapshots = [t.snapshot for t in tokens]
        certificates = read_certificates(tokens)
        entries = tuple(_inventory_token(t, path, snapshots, certificates, pin_for) for t in tokens)
        return ModuleEntry(
            path, reason, lib.library_description.rstrip(), lib.manufacturer_id.rstrip(),
            f"{version[0]}.{version[1]}", tuple(slots), entries,
        )


def _suppressed_token_errors() -> Any:
    return contextlib.suppress(p11.TokenNotPresent, p11.TokenNotRecognised)


def take_inventory(modules: list[tuple[str, str]], *, pin_for: PinFor | None = None,
                   named: tuple[str, ...] = ("--pkcs11-lib", "RAH_PKCS11_MODULE")) -> list[ModuleEntry]:
    """`inventory_module` for each (path, reason) of `known_module_paths()`; the stderr of
    modules the user did not name is contained (see `captured_stderr`)."""
    return [inventory_module(path, reason, pin_for=pin_for, contain_stderr=reason not in named)
            for path, reason in modules]
