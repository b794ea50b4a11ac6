"""RFC 7512 `pkcs11:` URIs: parse into a frozen value and print back (round trip).

The URI names a token and an object in it (path attributes) and says how to reach them (query
attributes: the module, the PIN). What we accept, and where we are stricter than the RFC:

- every path and query attribute of RFC 7512 section 2.3 (plus `slot-*` and `library-*`);
- vendor attributes (`x-...`) are kept, in order, and printed back; RFC 7512 lets a consumer
  ignore them, and we do when selecting;
- any other attribute name is an error (the RFC grammar has no room for it, and a typo such as
  `tokn=` silently matching every token would be worse than a refusal);
- a path attribute given twice is an error (RFC 7512 section 2.3); so is a standard query
  attribute given twice, and `pin-value` together with `pin-source` (which PIN would win?);
- `slot-id` is a decimal number (0 is a real slot); `library-version` is `M` or `M.N`;
  `type` is one of `cert`, `data`, `private`, `public`, `secret-key`;
- `id` is raw bytes (CKA_ID) and printed fully percent-encoded (`%01%a2`); text attributes are
  percent-decoded UTF-8.

`pin-value` is a secret: it is hidden from `repr`, `str` and every error message; only
`to_string()` writes it (that is what a round trip needs).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from rolesanywhere_hsm.errors import Pkcs11UriError

__all__ = ["OBJECT_TYPES", "Pkcs11Uri", "is_pkcs11_uri", "parse_pkcs11_uri"]

SCHEME = "pkcs11:"
OBJECT_TYPES = ("cert", "data", "private", "public", "secret-key")

# RFC 7512 section 2.3, pk11-p-res-avail / pk11-q-res-avail: characters that may stand
# unencoded in a path value (besides unreserved) and in a query value. quote() keeps
# unreserved characters "A-Za-z0-9-._~" whatever `safe` says.
_PATH_SAFE = ":[]@!$'()*+,="
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
    "pin_value": "pin-value",
    "module_name": "module-name",
    "module_path": "module-path",
}
_PATH_BY_URI_NAME = {v: k for k, v in _PATH_ATTRS.items()}
_QUERY_BY_URI_NAME = {v: k for k, v in _QUERY_ATTRS.items()}


@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed `pkcs11:` URI. `None` means "attribute absent" (matches anything)."""

    token: str | None = None
    manufacturer: str | None = None
    serial: str | None = None
    model: str | None = None
    library_manufacturer: str | None = None
    library_description: str | None = None
    library_version: tuple[int, int] | None = None
    slot_description: str | None = None
    slot_manufacturer: str | None = None
    slot_id: int | None = None
    object: str | None = None
    type: str | None = None
    id: bytes | None = None
    pin_source: str | None = None
    pin_value: str | None = field(default=None, repr=False)
    module_name: str | None = None
    module_path: str | None = None
    vendor_path: tuple[tuple[str, str], ...] = ()
    vendor_query: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.type is not None and self.type not in OBJECT_TYPES:
            raise Pkcs11UriError(
                f"pkcs11: URI type={self.type!r} is not one of {', '.join(OBJECT_TYPES)}.",
                hint="Use type=cert for a certificate and type=private for a private key.",
            )
        if self.slot_id is not None and self.slot_id < 0:
            raise Pkcs11UriError("pkcs11: URI slot-id must not be negative.",
                                 hint="slot-id is the decimal slot number.")
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
                text = "".join(f"%{b:02x}" for b in value)
            elif name == "slot_id":
                text = str(value)
            elif name == "library_version":
                text = f"{value[0]}.{value[1]}"
            else:
                text = quote(value, safe=_PATH_SAFE)
            path.append(f"{uri_name}={text}")
        path += [f"{k}={quote(v, safe=_PATH_SAFE)}" for k, v in self.vendor_path]
        query = []
        for name, uri_name in _QUERY_ATTRS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if name == "pin_value" and hide_pin:
                query.append(f"{uri_name}=<hidden>")
            else:
                query.append(f"{uri_name}={quote(value, safe=_QUERY_SAFE)}")
        query += [f"{k}={quote(v, safe=_QUERY_SAFE)}" for k, v in self.vendor_query]
        text = SCHEME + ";".join(path)
        return text + ("?" + "&".join(query) if query else "")

    def __str__(self) -> str:
        """The URI with any pin-value hidden: safe for messages and logs."""
        return self.to_string(hide_pin=True)

    def __repr__(self) -> str:
        return f"Pkcs11Uri({self.to_string(hide_pin=True)!r})"

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
            parts.append("id=" + "".join(f"%{b:02x}" for b in self.id))
        if self.type is not None:
            parts.append(f"type={self.type}")
        return ", ".join(parts)

    def with_changes(self, **changes: Any) -> Pkcs11Uri:
        return replace(self, **changes)


def is_pkcs11_uri(text: str) -> bool:
    return text[: len(SCHEME)].lower() == SCHEME


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


def _split_attribute(part: str, where: str) -> tuple[str, str]:
    name, sep, value = part.partition("=")
    if not sep or not name:
        shown = part if not part.startswith("pin-value") else "pin-value"
        raise Pkcs11UriError(
            f"pkcs11: URI {where} component has {shown!r}, which is not name=value.",
            hint="Separate path attributes with ';' and query attributes with '&'.",
        )
    return name, value


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

    for part in path_text.split(";") if path_text else []:
        name, raw = _split_attribute(part, "path")
        if name.startswith("x-"):
            vendor_path.append((name, _decode_text(raw, name)))
            continue
        key = _PATH_BY_URI_NAME.get(name)
        if key is None:
            hint = "Known path attributes: " + ", ".join(_PATH_ATTRS.values()) + "."
            if name in _QUERY_BY_URI_NAME:
                hint = f"{name} is a query attribute: put it after '?', e.g. pkcs11:...?{name}=..."
            raise Pkcs11UriError(f"pkcs11: URI has an unknown path attribute {name!r}.", hint=hint)
        if key in values:
            raise Pkcs11UriError(f"pkcs11: URI has the path attribute {name} twice.",
                                 hint="RFC 7512 allows each path attribute once.")
        values[key] = _path_value(key, name, raw)

    for part in query_text.split("&") if query_text else []:
        name, raw = _split_attribute(part, "query")
        if name.startswith("x-"):
            vendor_query.append((name, _decode_text(raw, name)))
            continue
        key = _QUERY_BY_URI_NAME.get(name)
        if key is None:
            hint = "Known query attributes: " + ", ".join(_QUERY_ATTRS.values()) + "."
            if name in _PATH_BY_URI_NAME:
                hint = f"{name} is a path attribute: put it before '?', separated by ';'."
            raise Pkcs11UriError(f"pkcs11: URI has an unknown query attribute {name!r}.", hint=hint)
        if key in values:
            raise Pkcs11UriError(f"pkcs11: URI has the query attribute {name} twice.",
                                 hint="Give each of pin-value, pin-source, module-name, "
                                 "module-path at most once.")
        values[key] = _decode_text(raw, name, secret=(key == "pin_value"))

    return Pkcs11Uri(**values, vendor_path=tuple(vendor_path), vendor_query=tuple(vendor_query))


def _path_value(key: str, name: str, raw: str) -> Any:
    if key == "id":
        return _decode_bytes(raw, name)
    text = _decode_text(raw, name)
    if key == "slot_id":
        if not text.isascii() or not text.isdigit():
            raise Pkcs11UriError(f"pkcs11: URI slot-id={text!r} is not a decimal number.",
                                 hint="Example: slot-id=0 (see `pkcs11-tool --list-slots`).")
        return int(text)
    if key == "library_version":
        major, dot, minor = text.partition(".")
        if not (major.isascii() and major.isdigit()) or (dot and not (minor.isascii() and minor.isdigit())):
            raise Pkcs11UriError(f"pkcs11: URI library-version={text!r} is not M or M.N.",
                                 hint="Example: library-version=2.6")
        return (int(major), int(minor) if dot else 0)
    if key == "type" and text not in OBJECT_TYPES:
        raise Pkcs11UriError(f"pkcs11: URI type={text!r} is not one of {', '.join(OBJECT_TYPES)}.",
                             hint="Use type=cert for a certificate, type=private for a private key.")
    return text

