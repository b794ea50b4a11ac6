"""One redaction rule for every message that quotes what a user typed.

Users put secrets where they do not belong: a `pin-value` in a URI that is then taken for a file
name, a PIN typed where a `pin-source` goes, a password in a proxy URL. Any message that quotes
user input (a path, a URI, an endpoint, an option value) passes it through `redact()` first, so
that the quoted text keeps what helps a person find the mistake and loses what could be a secret.

The rules, applied to any text, not only to well-formed URIs (a malformed URI is exactly when
we quote it):
- `pin-value=...` keeps its name and loses its value, up to the next attribute or the end;
- `pin-source=...` is kept only in a recognised form: `file:PATH` (or an absolute path),
  `env:NAME` with NAME in the conventional upper case, and `cmd:` with the command's name
  only; anything else may be a PIN typed in the wrong place and is hidden;
- `user:password@` in a URL (`scheme://user:password@host`) is dropped;
- control characters are escaped so that a quoted value cannot rewrite the terminal.

Applied twice it changes nothing. Besides the call sites, `RolesAnywhereError` passes every
message and hint through it (errors.py): a message built by code that forgot to redact a
quoted value is still safe, in the one-line error and in a `--debug` traceback.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a cache hit
if TYPE_CHECKING:
    import logging
    import re

__all__ = ["HIDDEN", "RedactingFilter", "one_line", "redact", "redact_optional", "without_pin_attributes"]

HIDDEN = "<hidden>"

# A value ends where the next attribute starts (`&name=` or `;name=`), not at any `&`: a PIN
# may contain `&`, and cutting there would echo the rest of it.
_NEXT_ATTRIBUTE = r"(?=[&;][A-Za-z][A-Za-z0-9-]*=|$)"
# A value already hidden is left with what follows it, so that redact() is idempotent and a
# message built from redacted parts keeps its tail (": No such file or directory").
# Flags are written inline (`(?is)`: IGNORECASE, DOTALL) so that `re` is imported only when a
# pattern is first compiled: a cache hit quotes nothing and must not pay for `re` and `enum`.
_PATTERNS: dict[str, str] = {
    "pin_value": r"(?is)(pin-value\s*=)(?!<hidden>).*?" + _NEXT_ATTRIBUTE,
    "pin_source": r"(?is)(pin-source\s*=)(?!<hidden>)(.*?)" + _NEXT_ATTRIBUTE,
    "userinfo": r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s]*@",
    # Shown only in the conventional form (upper case): `env:Pin1234` is more likely a PIN.
    "env_name": r"[A-Z_][A-Z0-9_]*",
    "control": r"[\x00-\x1f\x7f-\x9f]",
}
_compiled: dict[str, re.Pattern[str]] = {}


def _pattern(name: str) -> re.Pattern[str]:
    """The pattern `name` of _PATTERNS, compiled on first use: this module is imported on every
    run (errors.py uses it), and compiling them all costs a cache hit, which quotes nothing."""
    pattern = _compiled.get(name)
    if pattern is None:
        import re

        pattern = _compiled[name] = re.compile(_PATTERNS[name])
    return pattern


def _shown_pin_source(value: str) -> str:
    """A pin-source value as it may appear in a message."""
    from urllib.parse import unquote

    decoded = unquote(value)
    if decoded.startswith("file:") or decoded.startswith("/"):
        return value
    if decoded.startswith("env:") and _pattern("env_name").fullmatch(decoded[4:]):
        return value
    if decoded.startswith("cmd:"):
        words = decoded[4:].split()
        program = words[0].rsplit("/", 1)[-1] if words else ""
        return f"cmd:{program} ..." if len(words) > 1 else f"cmd:{program}"
    return HIDDEN


def _escape_control(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group(0)):02x}"


def redact(text: str) -> str:
    """`text` (a path, a URI, an option value) made fit to quote in a message or a log."""
    text = _pattern("pin_value").sub(lambda m: m.group(1) + HIDDEN, text)
    text = _pattern("pin_source").sub(lambda m: m.group(1) + _shown_pin_source(m.group(2)), text)
    text = _pattern("userinfo").sub(lambda m: m.group(1), text)
    return _pattern("control").sub(_escape_control, text)


# A PIN attribute in a pkcs11: URI, with the separator that joins it to the rest; its value ends
# where the next attribute starts (as for redaction) or at the query's `?`.
_PIN_ATTRIBUTE_END = r"(?=[&;?][A-Za-z][A-Za-z0-9-]*=|\?|$)"
_PATTERNS["pin_attribute_after"] = r"(?is)[;&]pin-(?:value|source)\s*=.*?" + _PIN_ATTRIBUTE_END
_PATTERNS["pin_attribute_first"] = (r"(?is)(?<=[:?])pin-(?:value|source)\s*=.*?(?:[&;](?=[A-Za-z][A-Za-z0-9-]*=)"
                                    r"|(?=\?)|$)")


def without_pin_attributes(uri: str) -> str:
    """A pkcs11: URI without its `pin-value` and `pin-source` attributes (anywhere), so that
    how the PIN is found never changes what the URI names: the cache key and `cache list`'s
    description use this. Text that is not a pkcs11: URI is returned as it is."""
    if uri[:7].lower() != "pkcs11:":
        return uri
    if "pin-" not in uri.lower():
        return uri
    after, first = _pattern("pin_attribute_after"), _pattern("pin_attribute_first")
    previous = None
    while previous != uri:  # one pass can leave a second attribute at the front
        previous = uri
        uri = first.sub("", after.sub("", uri))
    return uri.replace("?&", "?").removesuffix("?")


def redact_optional(text: str | None) -> str | None:
    """`redact()` that lets None through, for optional settings."""
    return None if text is None else redact(text)


# Beyond the C0/C1 controls: line and paragraph separators, and the bidirectional overrides
# that make a terminal show text in another order than it was sent.
_PATTERNS["unsafe"] = r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"


def _escape_unsafe(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def one_line(text: str, limit: int = 200) -> str:
    """Text from a server (an error message, an error type) made fit to show: one line,
    control characters escaped (so it cannot move the cursor or recolour the terminal), and
    at most `limit` characters, the cut marked with `...`."""
    shown = _pattern("unsafe").sub(_escape_unsafe, text)
    return shown if len(shown) <= limit else shown[: max(0, limit - 3)] + "..."


class RedactingFilter:
    """A logging filter that passes every record's text through `redact()`: the safety net
    for `--debug` log lines that quote user input (a module path, a URI's criteria), as
    errors.py is for messages. Put it on the handler (a logger's own filters do not see
    its children's records). A plain class (logging takes any object with a `filter` method):
    this module is imported on a cache hit, which must not import logging."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        shown = redact(text)
        if shown != text:
            record.msg, record.args = shown, None
        return True
