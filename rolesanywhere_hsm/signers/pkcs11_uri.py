"""RFC 7512 `pkcs11:` URIs: parse into a frozen value and print back (round trip).

The URI names a token and an object in it (path attributes) and says how to reach them (query
attributes: the module, the PIN). What we accept, to the letter of RFC 7512 where it speaks,
and where we are stricter:

- every path and query attribute of RFC 7512 section 2.3;
- vendor-specific attributes (`pk11-v-attr-nm-char` names: letters, digits, `-`, `_`; the
  RFC's own example is `vendor-aaa=value-a`) are kept, in order, and printed back; a consumer
  may ignore them, and we do when selecting. A name that is one typo away from a standard
  attribute (`tokn=`, `objet=`) is refused instead: silently matching every token would be
  worse than a refusal;
- a path attribute given twice is an error (RFC 7512 section 2.3); so is a standard query
  attribute given twice, and `pin-value` together with `pin-source` (which PIN would win?);
- `slot-id` is a decimal CK_SLOT_ID (a C `unsigned long`: 0 is a real slot, and a number the
  platform's CK_ULONG cannot hold is refused); `library-version` is `M` or `M.N`, each part a
  CK_BYTE (0..255); `type` is one of `cert`, `data`, `private`, `public`, `secret-key`;
- characters whose meaning changes are refused: `;` inside a query value (some parsers end
  the attribute there: `?pin-value=1234;pin-source=...` must not send the PIN
  `1234;pin-source=...` here and something else elsewhere), written `%3B`. An unencoded `&`
  in a path value is accepted as RFC 7512's grammar allows (`pk11-path-res-avail`; p11tool
  prints labels like `R&D` that way) and printed back as `%26`; inside a query value it ends
  the value, as the grammar says. A path value holding `&pin-value=` (or another query
  attribute) is refused: that is a query whose `?` was forgotten, and the PIN would end up in
  a label;
- `module-path` must be absolute (RFC 7512 section 2.4: a URI must not load a library from
  wherever the process happens to run); `module-name` is case-insensitive
  (`module_name_matches`);
- `id` is raw bytes (CKA_ID), printed fully percent-encoded; every percent-escape is printed
  with uppercase hex (`%4C`, as RFC 3986 section 2.1 and other implementations print it);
  text attributes are percent-decoded UTF-8.

`pin-value` is a secret: it is hidden from `repr`, `str` and every error message; only
`to_string()` writes it (that is what a round trip needs). Errors quote attribute names and
non-secret values, never a component of the query after a `pin-value` (a PIN containing an
unencoded `&` would otherwise be shown in part).
"""

from __future__ import annotations

import re
import struct
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from rolesanywhere_hsm.errors import Pkcs11UriError
from rolesanywhere_hsm.record import Record
from rolesanywhere_hsm.redact import redact

__all__ = [
    "CK_BYTE_MAX",
    "CK_ULONG_MAX",
    "OBJECT_TYPES",
    "Pkcs11Uri",
    "encode_id",
    "is_pkcs11_uri",
    "module_name_matches",
    "parse_pkcs11_uri",
]

SCHEME = "pkcs11:"
OBJECT_TYPES = ("cert", "data", "private", "public", "secret-key")
# CK_SLOT_ID is a CK_ULONG, a C unsigned long: 64 bits on LP64 Unix, 32 on Windows.
# struct's native "L" is that C type (ctypes would say the same at 4 ms of start-up).
CK_ULONG_MAX = 2 ** (8 * struct.calcsize("L")) - 1
# CK_VERSION's major and minor are CK_BYTEs.
CK_BYTE_MAX = 255
# RFC 7512 pk11-v-attr-nm-char: ALPHA / DIGIT / "-" / "_".
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_-]+")

# RFC 7512 section 2.3, pk11-p-res-avail / pk11-q-res-avail: characters that may stand
# unencoded in a path value (besides unreserved) and in a query value. quote() keeps
# unreserved characters "A-Za-z0-9-._~" whatever `safe` says.
_PATH_SAFE = ":[]@!$'()*+,="
# RFC 7512 allows '&' in a path value (pk11-path-res-avail), but `&pin-value=` there is a query
# whose '?' was forgotten: the PIN would become part of a label. Refused instead of guessed.
_MISPLACED_QUERY = re.compile(r"&(pin-value|pin-source|module-name|module-path)=", re.IGNORECASE)
_QUERY_SAFE = ":[]@!$'()*+,=/?|"

# Python field name -> URI attribute name, in the order the printer writes them.
_PATH_ATTRS: dict[str, str] = {
    "token": "token",
    "manufacturer": "manufacturer",
    "serial": "serial",
    "model": "model",
    "library_manufacturer": "library-manufacturer",
    "library_description": "library-description",
    "library_version": "library-version",
    "slot_description": "slot-description",
    "slot_manufacturer": "slot-manufacturer",
    "slot_id": "slot-id",
    "object": "object",
    "type": "type",
    "id": "id",
}
_QUERY_ATTRS: dict[str, str] = {
    "pin_source": "pin-source",
    "module_name": "module-name",
    "module_path": "module-path",
    "pin_value": "pin-value",
}
_PATH_BY_URI_NAME = {v: k for k, v in _PATH_ATTRS.items()}
_QUERY_BY_URI_NAME = {v: k for k, v in _QUERY_ATTRS.items()}
_STANDARD_NAMES = frozenset(_PATH_BY_URI_NAME) | frozenset(_QUERY_BY_URI_NAME)
# Names people write for a standard attribute (other tools' words): refused with the right one.
_MISTAKES = {"label": "object", "key": "object", "slot": "slot-id", "slotid": "slot-id",
             "pin": "pin-value", "module": "module-path", "lib": "module-path",
             "library": "module-path", "path": "module-path", "serial-number": "serial",
             "key-id": "id", "cka-id": "id", "token-label": "token"}


class Pkcs11Uri(Record):
    """A parsed `pkcs11:` URI. `None` means "attribute absent" (matches anything)."""

    __slots__ = ("token", "manufacturer", "serial", "model", "library_manufacturer", "library_description",
                 "library_version", "slot_description", "slot_manufacturer", "slot_id", "object", "type",
                 "id", "pin_source", "pin_value", "module_name", "module_path", "vendor_path",
                 "vendor_query")
    _compared = __slots__
    token: str | None
    manufacturer: str | None
    serial: str | None
    model: str | None
    library_manufacturer: str | None
    library_description: str | None
    library_version: tuple[int, int] | None
    slot_description: str | None
    slot_manufacturer: str | None
    slot_id: int | None
    object: str | None
    type: str | None
    id: bytes | None
    pin_source: str | None
    pin_value: str | None
    module_name: str | None
    module_path: str | None
    vendor_path: tuple[tuple[str, str], ...]
    vendor_query: tuple[tuple[str, str], ...]

    def __init__(self, token: str | None = None, manufacturer: str | None = None, serial: str | None = None,
                 model: str | None = None, library_manufacturer: str | None = None,
                 library_description: str | None = None, library_version: tuple[int, int] | None = None,
                 slot_description: str | None = None, slot_manufacturer: str | None = None,
                 slot_id: int | None = None, object: str | None = None, type: str | None = None,
                 id: bytes | None = None, pin_source: str | None = None, pin_value: str | None = None,
                 module_name: str | None = None, module_path: str | None = None,
                 vendor_path: tuple[tuple[str, str], ...] = (),
                 vendor_query: tuple[tuple[str, str], ...] = ()) -> None:
        self._set(token=token, manufacturer=manufacturer, serial=serial, model=model,
                  library_manufacturer=library_manufacturer, library_description=library_description,
                  library_version=library_version, slot_description=slot_description,
                  slot_manufacturer=slot_manufacturer, slot_id=slot_id, object=object, type=type, id=id,
                  pin_source=pin_source, pin_value=pin_value, module_name=module_name,
                  module_path=module_path, vendor_path=vendor_path, vendor_query=vendor_query)
        self.__post_init__()

    def __post_init__(self) -> None:
        if self.type is not None and self.type not in OBJECT_TYPES:
            raise Pkcs11UriError(
                f"pkcs11: URI type={self.type!r} is not one of {', '.join(OBJECT_TYPES)}.",
                hint="Use type=cert for a certificate and type=private for a private key.",
            )
        if self.slot_id is not None and not 0 <= self.slot_id <= CK_ULONG_MAX:
            raise Pkcs11UriError(
                f"pkcs11: URI slot-id={self.slot_id} is out of range (0..{CK_ULONG_MAX}, a CK_SLOT_ID).",
                hint="slot-id is the decimal slot number (`pkcs11-tool --list-slots`).",
            )
        if self.library_version is not None and not all(
            0 <= part <= CK_BYTE_MAX for part in self.library_version
        ):
            raise Pkcs11UriError(
                "pkcs11: URI library-version parts must be 0..255 (CK_VERSION holds two bytes).",
                hint="Example: library-version=2.6",
            )
        if self.module_path is not None and not self.module_path.startswith("/"):
            raise Pkcs11UriError(
                "pkcs11: URI module-path must be an absolute path (RFC 7512 section 2.4).",
                hint="Write the module's full path, e.g. module-path=/usr/lib/softhsm/libsofthsm2.so, "
                "or use module-name=.",
            )
        for name, _value in self.vendor_path + self.vendor_query:
            if not _ATTRIBUTE_NAME.fullmatch(name) or name in _STANDARD_NAMES:
                raise Pkcs11UriError(
                    "pkcs11: URI vendor attribute names are letters, digits, '-' and '_', and "
                    "not a standard attribute's name.",
                    hint="Example: x-vendor=value.",
                )
        if self.pin_value is not None and self.pin_source is not None:
            raise Pkcs11UriError(
                "The pkcs11: URI has both pin-value and pin-source.",
                hint="Keep one of them (pin-source keeps the PIN out of the URI).",
            )

    # -- printing -------------------------------------------------------------------------

    def to_string(self, *, hide_pin: bool = False) -> str:
        """The URI text. With the PIN unless `hide_pin`: parse(to_string()) == self."""
        path = []
        for name, uri_name in _PATH_ATTRS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if name == "id":
                text = encode_id(value)
            elif name == "slot_id":
                text = str(value)
            elif name == "library_version":
                text = f"{value[0]}.{value[1]}" if value[1] else str(value[0])  # "3" is 3.0
            else:
                text = quote(value, safe=_PATH_SAFE)
            path.append(f"{uri_name}={text}")
        path += [f"{k}={quote(v, safe=_PATH_SAFE)}" for k, v in self.vendor_path]
        # pin-value last: the parser refuses anything unknown after it (see parse_pkcs11_uri).
        query = []
        for name, uri_name in _QUERY_ATTRS.items():
            value = getattr(self, name)
            if value is None or name == "pin_value":
                continue
            query.append(f"{uri_name}={quote(value, safe=_QUERY_SAFE)}")
        query += [f"{k}={quote(v, safe=_QUERY_SAFE)}" for k, v in self.vendor_query]
        if self.pin_value is not None:
            shown = "<hidden>" if hide_pin else quote(self.pin_value, safe=_QUERY_SAFE)
            query.append(f"pin-value={shown}")
        text = SCHEME + ";".join(path)
        return text + ("?" + "&".join(query) if query else "")

    def __str__(self) -> str:
        """The URI with any pin-value hidden and the pin-source shown only in a recognised
        form (`redact()`): safe for messages and logs."""
        return redact(self.to_string(hide_pin=True))

    def __repr__(self) -> str:
        return f"Pkcs11Uri({str(self)!r})"

    # -- helpers for selection --------------------------------------------------------------

    def token_criteria(self) -> dict[str, Any]:
        """The attributes that select a slot and token, by URI name (for messages)."""
        names = ("token", "manufacturer", "serial", "model", "slot_description",
                 "slot_manufacturer", "slot_id")
        return {_PATH_ATTRS[n]: getattr(self, n) for n in names if getattr(self, n) is not None}

    def library_criteria(self) -> dict[str, Any]:
        names = ("library_manufacturer", "library_description", "library_version")
        return {_PATH_ATTRS[n]: getattr(self, n) for n in names if getattr(self, n) is not None}

    def object_criteria(self) -> str:
        """'object=x, id=%01' for messages (empty when the URI names no object)."""
        parts = []
        if self.object is not None:
            parts.append(f"object={self.object!r}")
        if self.id is not None:
            parts.append("id=" + encode_id(self.id))
        if self.type is not None:
            parts.append(f"type={self.type}")
        return ", ".join(parts)

    def with_changes(self, **changes: Any) -> Pkcs11Uri:
        return self._replace(**changes)


def encode_id(ident: bytes) -> str:
    """CKA_ID as this printer writes it in a URI: every byte percent-encoded, upper-case hex
    (`%01%A2`, RFC 7512 section 2.3 and RFC 3986's normalised form). Messages use it too, so
    an id shown in an error can be pasted into `id=`."""
    return "".join(f"%{b:02X}" for b in ident)


def is_pkcs11_uri(text: str) -> bool:
    return text[: len(SCHEME)].lower() == SCHEME


def module_name_matches(module_name: str, file_name: str) -> bool:
    """Whether a library file is the module that `module-name=` names.

    RFC 7512 section 2.3: the name is the module's file name without the platform's prefix
    and suffix (`mypkcs11` for `libmypkcs11.so`, `mypkcs11.dll`), compared case-insensitively.
    We also accept the name written with its prefix or suffix (`libsofthsm2.so`), as users do.
    """
    def stem(name: str) -> str:
        name = name.rsplit("/", 1)[-1].casefold()
        name = re.sub(r"\.(so(\.[0-9]+)*|dylib|dll)$", "", name)
        return name[3:] if name.startswith("lib") else name

    return bool(module_name) and stem(module_name) == stem(file_name)


def _decode_text(raw: str, attr: str, *, secret: bool = False) -> str:
    data = _decode_bytes(raw, attr, secret=secret)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Pkcs11UriError(
            f"pkcs11: URI attribute {attr} is not valid UTF-8 once percent-decoded.",
            hint="Percent-encode the UTF-8 bytes of the value (RFC 7512 section 2.3).",
        ) from None


def _decode_bytes(raw: str, attr: str, *, secret: bool = False) -> bytes:
    # unquote_to_bytes silently keeps a bad escape such as "%zz"; the RFC grammar does not.
    i = raw.find("%")
    while i != -1:
        if len(raw) < i + 3 or any(c not in "0123456789abcdefABCDEF" for c in raw[i + 1 : i + 3]):
            shown = "" if secret else f" in {raw!r}"
            raise Pkcs11UriError(
                f"pkcs11: URI attribute {attr} has a bad percent-escape{shown}.",
                hint="A '%' must be followed by two hex digits; write '%25' for '%' itself.",
            )
        i = raw.find("%", i + 3)
    return unquote_to_bytes(raw)


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _split_attribute(part: str, where: str, index: int, *, hidden: bool) -> tuple[str, str]:
    """`name=value` of one component. Errors say which component, never what it holds: it
    may be the tail of a PIN whose `&` was not encoded."""
    name, sep, value = part.partition("=")
    if not sep or not name:
        raise Pkcs11UriError(
            f"pkcs11: URI: the {_ordinal(index)} {where} component is not name=value"
            + (f" ({name})." if name in _STANDARD_NAMES and not hidden else " (not shown)."),
            hint="Separate path attributes with ';' and query attributes with '&'; inside a "
            "value write ';' as %3B, '&' as %26 and '%' as %25.",
        )
    return name, value


def _shown_name(name: str) -> str:
    return repr(name) if _ATTRIBUTE_NAME.fullmatch(name) and len(name) <= 40 else "not shown"


def _check_name(name: str, where: str, *, hidden: bool) -> None:
    """An attribute name that is neither standard nor a well-formed vendor name, or that is
    a likely typo of a standard one, is refused."""
    shown = "(not shown: it follows a pin-value)" if hidden else _shown_name(name)
    if name in _QUERY_BY_URI_NAME and where == "path":
        raise Pkcs11UriError(
            f"pkcs11: URI has the query attribute {name} in its path.",
            hint=f"{name} is a query attribute: put it after '?', e.g. pkcs11:...?{name}=...",
        )
    if name in _PATH_BY_URI_NAME and where == "query":
        raise Pkcs11UriError(
            f"pkcs11: URI has the path attribute {name} in its query.",
            hint=f"{name} is a path attribute: put it before '?', separated by ';'.",
        )
    known = _PATH_ATTRS.values() if where == "path" else _QUERY_ATTRS.values()
    if not _ATTRIBUTE_NAME.fullmatch(name):
        raise Pkcs11UriError(
            f"pkcs11: URI has a {where} attribute name {shown} with characters RFC 7512 does not "
            "allow in a name.",
            hint=f"Known {where} attributes: {', '.join(known)}.",
        )
    import difflib  # only to suggest a name in an error: not on a good URI's way

    close = difflib.get_close_matches(name.lower(), [*_STANDARD_NAMES, *_MISTAKES], n=1, cutoff=0.75)
    if close:
        meant = _MISTAKES.get(close[0], close[0])
        raise Pkcs11UriError(
            f"pkcs11: URI has an unknown {where} attribute {shown}; did you mean {meant}?",
            hint=f"Known {where} attributes: {', '.join(known)}.",
        )


def parse_pkcs11_uri(text: str) -> Pkcs11Uri:
    """Parse a `pkcs11:` URI (RFC 7512); `Pkcs11UriError` says what is wrong and where.

    Error messages quote attribute names and non-secret values, never the whole input, so a
    pin-value cannot leak through them.
    """
    if not is_pkcs11_uri(text):
        raise Pkcs11UriError("This is not a pkcs11: URI (it must start with 'pkcs11:').",
                             hint="Example: pkcs11:token=mytoken;object=mykey")
    body = text[len(SCHEME):]
    if "#" in body:
        raise Pkcs11UriError("pkcs11: URIs have no fragment ('#').",
                             hint="Percent-encode '#' as %23 inside a value.")
    path_text, _, query_text = body.partition("?")
    values: dict[str, Any] = {}
    vendor_path: list[tuple[str, str]] = []
    vendor_query: list[tuple[str, str]] = []

    for index, part in enumerate(path_text.split(";") if path_text else [], start=1):
        name, raw = _split_attribute(part, "path", index, hidden=False)
        misplaced = _MISPLACED_QUERY.search(raw)  # '&' itself is allowed (a label like R&D)
        if misplaced:
            raise Pkcs11UriError(
                f"pkcs11: URI path attribute {_shown_name(name)} holds the query attribute "
                f"{misplaced.group(1).lower()} (after an '&'); query attributes come after a '?'.",
                hint="Separate the query from the path with '?'; a '&' meant inside the value "
                "may be written %26.",
            )
        key = _PATH_BY_URI_NAME.get(name)
        if key is None:
            _check_name(name, "path", hidden=False)
            vendor_path.append((name, _decode_text(raw, name)))
            continue
        if key in values:
            raise Pkcs11UriError(f"pkcs11: URI has the path attribute {name} twice.",
                                 hint="RFC 7512 allows each path attribute once.")
        values[key] = _path_value(key, name, raw)

    after_pin = False
    for index, part in enumerate(query_text.split("&") if query_text else [], start=1):
        name, raw = _split_attribute(part, "query", index, hidden=after_pin)
        key = _QUERY_BY_URI_NAME.get(name)
        if key is None:
            _check_name(name, "query", hidden=after_pin)
        shown = name if key is not None or not after_pin else "(not shown: it follows a pin-value)"
        if ";" in raw:
            raise Pkcs11UriError(
                f"pkcs11: URI query attribute {shown} has an unencoded ';'.",
                hint="Write ';' inside a value as %3B (RFC 7512 section 2.3): other programs "
                "end the value there.",
            )
        if key is None:
            if after_pin:
                raise Pkcs11UriError(
                    "pkcs11: URI has an unknown query component after pin-value (not shown: it "
                    "may be the rest of a PIN).",
                    hint="Write '&' inside a PIN as %26; put vendor attributes before pin-value.",
                )
            vendor_query.append((name, _decode_text(raw, name)))
            continue
        if key in values:
            raise Pkcs11UriError(f"pkcs11: URI has the query attribute {name} twice.",
                                 hint="Give each of pin-value, pin-source, module-name, "
                                 "module-path at most once.")
        values[key] = _decode_text(raw, name, secret=(key == "pin_value"))
        after_pin = after_pin or key == "pin_value"

    return Pkcs11Uri(**values, vendor_path=tuple(vendor_path), vendor_query=tuple(vendor_query))


def _path_value(key: str, name: str, raw: str) -> Any:
    if key == "id":
        return _decode_bytes(raw, name)
    text = _decode_text(raw, name)
    if key == "slot_id":
        if not text.isascii() or not text.isdigit():
            raise Pkcs11UriError(f"pkcs11: URI slot-id={text!r} is not a decimal number.",
                                 hint="Example: slot-id=0 (see `pkcs11-tool --list-slots`).")
        if len(text) > 40:  # far beyond any CK_ULONG; keep int() off huge input
            text = str(CK_ULONG_MAX + 1)
        return int(text)
    if key == "library_version":
        major, dot, minor = text.partition(".")
        if not (major.isascii() and major.isdigit()) or (dot and not (minor.isascii() and minor.isdigit())):
            raise Pkcs11UriError(f"pkcs11: URI library-version={text!r} is not M or M.N.",
                                 hint="Example: library-version=2.6")
        if len(major) > 3 or len(minor) > 3:
            raise Pkcs11UriError(
                "pkcs11: URI library-version parts must be 0..255 (CK_VERSION holds two bytes).",
                hint="Example: library-version=2.6")
        return (int(major), int(minor) if dot else 0)
    if key == "type" and text not in OBJECT_TYPES:
        raise Pkcs11UriError(f"pkcs11: URI type={text!r} is not one of {', '.join(OBJECT_TYPES)}.",
                             hint="Use type=cert for a certificate, type=private for a private key.")
    return text
