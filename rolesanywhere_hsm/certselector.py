"""PURE: `--cert-selector` as the official helper spells it, and the rule that picks one
certificate with it.

Syntax (the official `aws_signing_helper`'s, so that a copied command line works):
  `Key=x509Subject,Value=CN=Workload,O=Example Key=x509Serial,Value=15D1963223`
  (pairs separated by white space; a value runs up to the next `Key=` or the end), or
  `file://selector.json` holding `[{"Key": "x509Issuer", "Value": "CN=Issuing CA"}, ...]`.
Keys: `x509Subject` and `x509Issuer` (an RFC 2253 distinguished name), `x509Serial` (hex).
Each key at most once; every given key must match.

Matching compares meanings, not strings: serials as numbers (`0x00ff`, `FF`, `ff` and
`00:FF` are one serial), names as names: each attribute by OID (`CN`, `cn`, `2.5.4.3` and
`OID.2.5.4.3` are one type), values compared after RFC 4518-like preparation (NFKC, case folded,
outer white space dropped, inner runs collapsed), the attributes of a multi-valued RDN in any
order. RDNs keep their order: RFC 2253 writes the most specific first (`CN=...,O=...,C=...`);
the reverse (OpenSSL's `C=...,O=...,CN=...`) is accepted too, since both name one entry.

Nothing here reads a token; the caller hands over certificate DER values (from a file, or from
every token) and gets back the index of the one to use, or an error that lists what matched.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rolesanywhere_hsm.errors import CertificateError, UsageError

__all__ = [
    "MAX_SELECTOR_FILE",
    "CertSelector",
    "Candidate",
    "candidate_from_der",
    "describe_candidate",
    "matches",
    "normalise_value",
    "parse_cert_selector",
    "parse_dn",
    "parse_selector_json",
    "parse_selector_pairs",
    "select_certificate",
]

SUBJECT, ISSUER, SERIAL = "x509Subject", "x509Issuer", "x509Serial"
_KEYS = (SUBJECT, ISSUER, SERIAL)
# A selector file is a few lines of JSON; anything larger is a mistake (or /dev/zero).
MAX_SELECTOR_FILE = 64 * 1024

# RFC 4514 section 3 keywords plus the ones OpenSSL, Windows and Go print; case-insensitive.
_ATTRIBUTE_TYPES = {
    "CN": "2.5.4.3", "COMMONNAME": "2.5.4.3",
    "SN": "2.5.4.4", "SURNAME": "2.5.4.4",
    "SERIALNUMBER": "2.5.4.5",
    "C": "2.5.4.6", "COUNTRYNAME": "2.5.4.6",
    "L": "2.5.4.7", "LOCALITYNAME": "2.5.4.7",
    "ST": "2.5.4.8", "S": "2.5.4.8", "STATEORPROVINCENAME": "2.5.4.8",
    "STREET": "2.5.4.9", "STREETADDRESS": "2.5.4.9",
    "O": "2.5.4.10", "ORGANIZATIONNAME": "2.5.4.10",
    "OU": "2.5.4.11", "ORGANIZATIONALUNITNAME": "2.5.4.11",
    "T": "2.5.4.12", "TITLE": "2.5.4.12",
    "POSTALCODE": "2.5.4.17",
    "NAME": "2.5.4.41",
    "GN": "2.5.4.42", "G": "2.5.4.42", "GIVENNAME": "2.5.4.42",
    "INITIALS": "2.5.4.43",
    "GENERATIONQUALIFIER": "2.5.4.44",
    "DNQUALIFIER": "2.5.4.46",
    "PSEUDONYM": "2.5.4.65",
    "ORGANIZATIONIDENTIFIER": "2.5.4.97",
    "DC": "0.9.2342.19200300.100.1.25", "DOMAINCOMPONENT": "0.9.2342.19200300.100.1.25",
    "UID": "0.9.2342.19200300.100.1.1", "USERID": "0.9.2342.19200300.100.1.1",
    "E": "1.2.840.113549.1.9.1", "EMAIL": "1.2.840.113549.1.9.1",
    "EMAILADDRESS": "1.2.840.113549.1.9.1",
}

Rdn = frozenset[tuple[str, str]]
"""One relative distinguished name: a set of (attribute OID, prepared value)."""
Dn = tuple[Rdn, ...]
"""A distinguished name in RFC 2253 order (most specific RDN first)."""


@dataclass(frozen=True)
class CertSelector:
    """What `--cert-selector` asked for; None means "any". `text` keeps what the user wrote,
    for messages."""

    subject: Dn | None = None
    issuer: Dn | None = None
    serial: int | None = None
    text: str = ""


@dataclass(frozen=True)
class Candidate:
    """What the matcher needs from one certificate, and what an error shows of it."""

    subject: Dn
    issuer: Dn
    serial: int
    not_after: object  # datetime; kept opaque so that plain-data tests can pass ordinals
    subject_text: str
    issuer_text: str


def _bad(message: str, text: str) -> UsageError:
    from rolesanywhere_hsm.redact import redact

    return UsageError(
        f"--cert-selector {redact(text)}: {message}.",
        hint="Write Key=x509Subject,Value=<DN> Key=x509Issuer,Value=<DN> Key=x509Serial,Value=<hex> "
        "(any of them), or file://selector.json holding [{\"Key\": ..., \"Value\": ...}].",
    )


def normalise_value(value: str) -> str:
    """RFC 4518-like preparation for caseIgnoreMatch: NFKC, case folded, white space runs
    collapsed to one space and trimmed."""
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


def _attribute_oid(name: str, text: str) -> str:
    key = name.strip()
    if key.upper().startswith("OID."):
        key = key[4:]
    if key and all(part.isdigit() for part in key.split(".")) and key.count(".") >= 1:
        return key
    oid = _ATTRIBUTE_TYPES.get(key.upper())
    if oid is None:
        raise _bad(f"unknown attribute type {key!r} in a distinguished name", text)
    return oid


def _hex_value(hex_text: str, text: str) -> str:
    """`#04...`: the BER encoding of the value (RFC 2253 section 2.4); we compare its string."""
    from asn1crypto import core

    try:
        parsed = core.load(bytes.fromhex(hex_text)).native
    except ValueError:
        raise _bad(f"#{hex_text} is not the hex of a BER value", text) from None
    return parsed.decode("utf-8", "replace") if isinstance(parsed, bytes) else str(parsed)


def parse_dn(dn: str, text: str | None = None) -> Dn:
    """An RFC 2253 string (`CN=a\\,b+OU=x,O=y`) -> its RDNs, most specific first, values
    prepared with normalise_value. `;` separates RDNs too (RFC 2253 section 4); values may be
    quoted, escaped with `\\c` or `\\XX` (UTF-8 hex pairs), or `#hex` BER."""
    text = dn if text is None else text
    rdns: list[Rdn] = []
    current: list[tuple[str, str]] = []
    i, n = 0, len(dn)
    if not dn.strip():
        raise _bad("a distinguished name is empty", text)
    while i < n:
        eq = dn.find("=", i)
        if eq < 0:
            raise _bad(f"{dn[i:].strip()!r} has no '=' in a distinguished name", text)
        oid = _attribute_oid(dn[i:eq], text)
        i = eq + 1
        while i < n and dn[i] == " ":
            i += 1
        raw = bytearray()
        if i < n and dn[i] == "#":
            j = i + 1
            while j < n and dn[j] not in ",;+":
                j += 1
            value = _hex_value(dn[i + 1 : j].strip(), text)
            i = j
        elif i < n and dn[i] == '"':
            j = i + 1
            while j < n and dn[j] != '"':
                if dn[j] == "\\" and j + 1 < n:
                    j += 1
                raw += dn[j].encode()
                j += 1
            if j >= n:
                raise _bad("a quoted value is not closed", text)
            i = j + 1
            while i < n and dn[i] == " ":
                i += 1
            value = raw.decode("utf-8", "replace")
        else:
            while i < n and dn[i] not in ",;+":
                if dn[i] == "\\":
                    if i + 1 >= n:
                        raise _bad("a distinguished name ends in a lone backslash", text)
                    pair = dn[i + 1 : i + 3]
                    if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
                        raw.append(int(pair, 16))
                        i += 3
                        continue
                    raw += dn[i + 1].encode()
                    i += 2
                    continue
                raw += dn[i].encode()
                i += 1
            value = raw.decode("utf-8", "replace")
        current.append((oid, normalise_value(value)))
        if i < n and dn[i] == "+":
            i += 1
            continue
        rdns.append(frozenset(current))
        current = []
        if i < n:  # a , or ; separator
            i += 1
            if i >= n:
                raise _bad("a distinguished name ends in a separator", text)
    return tuple(rdns)


def _parse_serial(value: str, text: str) -> int:
    digits = value.strip().replace(":", "").replace(" ", "")
    if digits[:2].lower() == "0x":
        digits = digits[2:]
    try:
        return int(digits, 16)
    except ValueError:
        raise _bad(f"x509Serial {value!r} is not a hexadecimal number", text) from None


def _build(pairs: Sequence[tuple[str, str]], text: str) -> CertSelector:
    seen: dict[str, str] = {}
    for key, value in pairs:
        if key not in _KEYS:
            raise _bad(f"unknown key {key!r} (use {', '.join(_KEYS)})", text)
        if key in seen:
            raise _bad(f"{key} is given twice", text)
        seen[key] = value
    if not seen:
        raise _bad("it holds no Key/Value pair", text)
    return CertSelector(
        subject=parse_dn(seen[SUBJECT], text) if SUBJECT in seen else None,
        issuer=parse_dn(seen[ISSUER], text) if ISSUER in seen else None,
        serial=_parse_serial(seen[SERIAL], text) if SERIAL in seen else None,
        text=text,
    )


def parse_selector_pairs(text: str) -> CertSelector:
    """`Key=K,Value=V Key=K2,Value=V2`: a value runs to the next `Key=` (after optional white
    space) or the end, as in the official helper, so DNs with commas need no quoting."""
    import re

    pairs: list[tuple[str, str]] = []
    rest = text.strip()
    pattern = re.compile(r"Key=(.+?),Value=(.+?)\s*(?=Key=|$)", re.DOTALL)
    while rest:
        match = pattern.match(rest)
        if not match:
            raise _bad(f"cannot read {rest[:40]!r} as Key=...,Value=...", text)
        pairs.append((match.group(1).strip(), match.group(2).strip()))
        rest = rest[match.end() :].lstrip()
    return _build(pairs, text)


def parse_selector_json(data: str | bytes, text: str) -> CertSelector:
    """The JSON form: a list of {"Key": ..., "Value": ...} (field names in any case, as Go's
    encoding/json reads them)."""
    try:
        entries = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise _bad("the file is not JSON", text) from None
    if not isinstance(entries, list):
        raise _bad('the JSON must be a list of {"Key": ..., "Value": ...}', text)
    pairs = []
    for entry in entries:
        fields = {str(k).lower(): v for k, v in entry.items()} if isinstance(entry, dict) else {}
        key, value = fields.get("key"), fields.get("value")
        if not isinstance(key, str) or not isinstance(value, str):
            raise _bad('each JSON entry must be {"Key": "<string>", "Value": "<string>"}', text)
        pairs.append((key, value))
    return _build(pairs, text)


def parse_cert_selector(text: str, read_file: Callable[[str, int], bytes] | None = None) -> CertSelector:
    """`--cert-selector`'s value -> CertSelector. `file://PATH` is read through `read_file(path,
    limit)` (bounded; the default reads at most MAX_SELECTOR_FILE bytes) so that tests can
    hand in plain data."""
    if text.startswith("file://"):
        path = text[len("file://") :]
        data = (read_file or _read_bounded)(path, MAX_SELECTOR_FILE)
        return parse_selector_json(data, text)
    return parse_selector_pairs(text)


def _read_bounded(path: str, limit: int) -> bytes:
    """The selector file, through the one bounded reader: a regular file (a FIFO or a device is
    refused at once, never waited on) of at most `limit` bytes."""
    from rolesanywhere_hsm.files import read_regular_file

    return read_regular_file(path, what="--cert-selector", limit=limit)


_STRING_CODECS = {30: "utf-16-be", 28: "utf-32-be", 20: "latin-1"}  # BMP, Universal, Teletex


def _attribute_text(value: object) -> str:
    """An attribute value as text, from its own bytes: asn1crypto's .native decodes a
    domainComponent through IDNA (and fails on some real-world values)."""
    from asn1crypto import core

    chosen = getattr(value, "chosen", value)  # DirectoryString is a CHOICE
    if isinstance(chosen, core.Any):
        chosen = chosen.parsed
    if isinstance(chosen, core.AbstractString):
        codec = _STRING_CODECS.get(chosen.tag, "utf-8")
        return bytes(chosen.contents or b"").decode(codec, "replace")
    native = chosen.native  # type: ignore[attr-defined]
    return native.decode("utf-8", "replace") if isinstance(native, bytes) else str(native)


# Keywords used when a name is shown (RFC 4514's, plus what OpenSSL and Windows print).
_SHORT_NAMES = {
    "2.5.4.3": "CN", "2.5.4.4": "SN", "2.5.4.5": "SERIALNUMBER", "2.5.4.6": "C", "2.5.4.7": "L",
    "2.5.4.8": "ST", "2.5.4.9": "STREET", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.12": "T",
    "2.5.4.42": "GN", "0.9.2342.19200300.100.1.25": "DC", "0.9.2342.19200300.100.1.1": "UID",
    "1.2.840.113549.1.9.1": "E",
}


def _escape(value: str) -> str:
    """RFC 4514 section 2.4 escaping, so that a shown name can be pasted into a selector."""
    out = "".join("\\" + c if c in ',+"\\<>;=' else c for c in value)
    if out.startswith(("#", " ")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def _dn_of(name: object) -> tuple[Dn, str]:
    """An asn1crypto Name -> (Dn in RFC 2253 order, RFC 4514 text for people)."""
    rdns: list[Rdn] = []
    shown: list[str] = []
    for rdn in name.chosen:  # type: ignore[attr-defined]  # RDNSequence, least specific first
        atvs, parts = [], []
        for atv in rdn:
            oid, value = atv["type"].dotted, _attribute_text(atv["value"])
            atvs.append((oid, normalise_value(value)))
            parts.append(f"{_SHORT_NAMES.get(oid, oid)}={_escape(value)}")
        rdns.append(frozenset(atvs))
        shown.append("+".join(parts))
    return tuple(reversed(rdns)), ",".join(reversed(shown))


def candidate_from_der(der: bytes) -> Candidate:
    """Read what matching needs from a certificate (asn1crypto: cheap, and ML-DSA safe)."""
    from asn1crypto import x509 as ax

    try:
        cert = ax.Certificate.load(der)
        tbs = cert["tbs_certificate"]
        subject, subject_text = _dn_of(tbs["subject"])
        issuer, issuer_text = _dn_of(tbs["issuer"])
        return Candidate(
            subject=subject,
            issuer=issuer,
            serial=tbs["serial_number"].native,
            not_after=tbs["validity"]["not_after"].native,
            subject_text=subject_text,
            issuer_text=issuer_text,
        )
    except Exception as exc:
        raise CertificateError(f"A certificate cannot be parsed: {exc}") from None


def _same_dn(wanted: Dn, actual: Dn) -> bool:
    return wanted == actual or tuple(reversed(wanted)) == actual


def matches(selector: CertSelector, candidate: Candidate) -> bool:
    """Every key the selector gives matches the certificate."""
    if selector.serial is not None and selector.serial != candidate.serial:
        return False
    if selector.subject is not None and not _same_dn(selector.subject, candidate.subject):
        return False
    return selector.issuer is None or _same_dn(selector.issuer, candidate.issuer)


def describe_candidate(candidate: Candidate, label: str | None = None) -> str:
    text = (
        f"subject {candidate.subject_text or '(empty)'}, issuer {candidate.issuer_text or '(empty)'}, "
        f"serial {candidate.serial:x}, expires {candidate.not_after}"
    )
    return f"{label}: {text}" if label else text


def select_certificate(
    candidates: Sequence[Candidate],
    selector: CertSelector,
    *,
    use_latest_expiring: bool = False,
    labels: Sequence[str] | None = None,
    where: str = "the certificates given",
) -> int:
    """The index of the one candidate `selector` picks.

    Several matches are an error listing them, unless `use_latest_expiring` picks the one with
    the latest notAfter (the first of those on a tie, so the choice is repeatable). No match is
    an error listing every candidate. `labels` (e.g. pkcs11: URIs) name candidates in messages.
    """
    from rolesanywhere_hsm.redact import redact

    found = [i for i, c in enumerate(candidates) if matches(selector, c)]
    if len(found) == 1:
        return found[0]
    if found and use_latest_expiring:
        latest = max(candidates[i].not_after for i in found)  # type: ignore[type-var]
        return next(i for i in found if candidates[i].not_after == latest)

    def listing(indexes: Sequence[int]) -> str:
        return "; ".join(describe_candidate(candidates[i], labels[i] if labels else None) for i in indexes)

    if found:
        raise CertificateError(
            f"--cert-selector {redact(selector.text)} matches {len(found)} certificates in {where}: "
            f"{listing(found)}.",
            hint="Add Key=x509Serial,Value=<hex> (or the issuer) to the selector, or pass "
            "--use-latest-expiring-certificate.",
        )
    shown = listing(range(len(candidates))) if candidates else "there are none"
    raise CertificateError(
        f"--cert-selector {redact(selector.text)} matches no certificate in {where} ({shown}).",
        hint="Check the subject, issuer and serial against the certificates listed.",
    )
