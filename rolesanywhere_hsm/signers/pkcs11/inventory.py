"""What a module shows, read into plain snapshots: tokens, certificates, and (after a login)
keys, with the URI that selects each certificate.

The readers here are the only place that walks slots and objects; `selection` decides over
what they return, the signer opens what was selected, and the CLI (`tokens`,
`read-certificate-data`) renders the data. Nothing here shapes JSON or text for people.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pkcs11 import Attribute, CertificateType, ObjectClass, TokenFlag
from pkcs11 import exceptions as p11

from rolesanywhere_hsm import x509 as _x509
from rolesanywhere_hsm.errors import Pkcs11UriError, SelectionError
from rolesanywhere_hsm.signers.pkcs11.error_mapping import mapped_errors
from rolesanywhere_hsm.signers.pkcs11.modules import loaded_module, resolve_module_path
from rolesanywhere_hsm.signers.pkcs11.selection import (
    ObjectSnapshot,
    TokenSnapshot,
    matching_tokens,
    object_matches,
)
from rolesanywhere_hsm.signers.pkcs11_uri import Pkcs11Uri, is_pkcs11_uri, parse_pkcs11_uri

__all__ = [
    "LiveToken",
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


@dataclass(frozen=True)
class LiveToken:
    """A snapshot and the python-pkcs11 token it was read from (to open sessions on)."""

    snapshot: TokenSnapshot
    token: Any


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


@dataclass(frozen=True)
class TokenCertificate:
    """A certificate found on a token, with the URI that selects exactly it."""

    der: bytes
    label: str
    id: bytes
    token: str
    serial: str
    uri: str


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
