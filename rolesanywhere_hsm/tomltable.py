"""Replacing one table of a TOML file, changing nothing else.

The standard library reads TOML (tomllib) but does not write it, and a writer that re-emits
the whole document would lose the user's comments, order and spelling. This module works on
lines, as rolesanywhere_hsm/inifile.py does for the AWS files: a table is its header line and
the lines up to the next header (comments and blank lines just before that header stay with
it). The result is parsed again with tomllib and compared with what was meant: the document as
it was, with only that table replaced. Anything else (a table defined by dotted keys elsewhere,
a header inside a multi-line string) is refused instead of guessed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (settings loads us)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["TomlEditError", "loads", "render_table", "replace_table", "toml_key", "toml_value"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_HEADER = re.compile(r"\s*\[")


class TomlEditError(ValueError):
    """The file cannot be edited safely line by line; the caller says what to do."""


def loads(text: str) -> dict[str, Any]:
    """`tomllib.loads`, with a document nested too deeply for its recursive parser (thousands
    of `[[[`) reported as the TOMLDecodeError every caller handles, not a RecursionError."""
    import tomllib

    try:
        return tomllib.loads(text)
    except RecursionError:
        raise tomllib.TOMLDecodeError("it is nested too deeply") from None


def toml_key(key: str) -> str:
    """A key as TOML writes it: bare when it can be, else a basic string."""
    return key if _BARE_KEY.fullmatch(key) else toml_value(key)


def toml_value(value: Any) -> str:
    """A string, bool, int or finite float as a TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TomlEditError("a number must be finite")
        return repr(value)
    if isinstance(value, str):
        out = []
        for char in value:
            if char in '"\\':
                out.append("\\" + char)
            elif char < " " or char == "\x7f":
                out.append(f"\\u{ord(char):04x}")
            else:
                out.append(char)
        return '"' + "".join(out) + '"'
    raise TomlEditError(f"cannot write a {type(value).__name__} value")


def render_table(path: Sequence[str], values: Mapping[str, Any], newline: str = "\n") -> str:
    """`[a.b]` and one `key = value` line per value."""
    lines = ["[" + ".".join(toml_key(part) for part in path) + "]"]
    lines += [f"{toml_key(key)} = {toml_value(value)}" for key, value in values.items()]
    return newline.join(lines) + newline


def _header_path(line: str) -> tuple[str, ...] | None:
    """The key path of a `[table]` header line (None for `[[array]]` or a non-header)."""
    import tomllib

    stripped = line.strip()
    if not _HEADER.match(line) or stripped.startswith("[["):
        return None
    try:
        document = loads(stripped)
    except tomllib.TOMLDecodeError:
        return None
    path: list[str] = []
    node: Any = document
    while isinstance(node, dict) and len(node) == 1:
        key = next(iter(node))
        path.append(key)
        node = node[key]
    return tuple(path) if node == {} else None


def _is_header(line: str) -> bool:
    return bool(_HEADER.match(line)) and line.strip()[:1] == "["


def replace_table(text: str, path: Sequence[str], values: Mapping[str, Any]) -> str:
    """`text` with the table at `path` holding exactly `values` (added at the end if absent).

    Raises TomlEditError when `text` is not valid TOML or the edit would change anything else.
    """
    import tomllib

    try:
        before = loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TomlEditError(f"it is not valid TOML: {exc}") from None
    lines = text.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    block = render_table(path, values, newline)
    wanted = tuple(path)
    starts = [i for i, line in enumerate(lines) if _header_path(line) == wanted]
    if len(starts) > 1:
        raise TomlEditError(f"the table [{'.'.join(path)}] appears more than once")
    if starts:
        start = starts[0]
        stop = next((i for i in range(start + 1, len(lines)) if _is_header(lines[i])), len(lines))
        keep_from = stop
        while keep_from > start + 1 and (not lines[keep_from - 1].strip()
                                         or lines[keep_from - 1].lstrip().startswith("#")):
            keep_from -= 1  # blank lines and comments that lead into the next table stay
        new = "".join(lines[:start]) + block + "".join(lines[keep_from:])
    else:
        head = text
        if head and not head.endswith(("\n", "\r")):
            head += newline
        if head.strip():
            head += newline
        new = head + block
    expected = _with_table(before, wanted, dict(values))
    try:
        after = loads(new)
    except tomllib.TOMLDecodeError as exc:
        raise TomlEditError(f"the edited file would not parse ({exc})") from None
    if after != expected:
        raise TomlEditError(f"[{'.'.join(path)}] is also set outside its own table")
    return new


def _with_table(document: dict[str, Any], path: tuple[str, ...], values: dict[str, Any]) -> dict[str, Any]:
    import copy

    result = copy.deepcopy(document)
    node = result
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise TomlEditError(f"'{part}' is not a table")
    node[path[-1]] = values
    return result
