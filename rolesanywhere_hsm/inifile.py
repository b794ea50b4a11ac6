"""Setting keys in one section of an AWS INI file (`~/.aws/credentials`, `~/.aws/config`),
changing nothing else.

configparser cannot do this: writing back loses comments, blank lines, key spelling and
order. This editor works on lines: it finds the section and the keys the way botocore's
reader (Python's `RawConfigParser`) does, replaces the value part of the key lines it was asked
to set (and their continuation lines), adds missing keys after the section's last key, or adds
the section at the end. Every other byte stays as it was, line endings included.

How the reader sees lines (Python's configparser, default settings, which botocore uses):
a line whose stripped text starts with `#` or `;` is a comment; `[name]` (up to the last `]`)
opens a section, matched exactly (`[ default ]` is the section " default "); `key = value` or
`key: value` is an option whose name is compared lower-cased and stripped; a line indented
deeper than its option's line continues that option's value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from rolesanywhere_hsm.errors import UsageError
from rolesanywhere_hsm.redact import redact

__all__ = ["check_section_name", "has_section", "set_section_values"]

_HEADER = re.compile(r"\[(?P<name>.+)\]")
_OPTION = re.compile(r"(?P<name>.*?)\s*[=:]\s*(?P<value>.*)$")
_NAME = re.compile(r"[^\[\]\x00-\x1f\x7f]+")


@dataclass
class _Line:
    text: str      # without its line ending
    ending: str    # "\n", "\r\n", "\r" or "" (last line without one)
    kind: str      # "blank", "comment", "header", "option", "continuation", "other"
    name: str = ""  # section name for headers, lower-cased option name for options
    indent: int = 0


def check_section_name(section: str) -> None:
    """A section (profile) name we can write and botocore reads back as the same name."""
    if not section or section != section.strip() or not _NAME.fullmatch(section) or section == "DEFAULT":
        raise UsageError(
            f"The profile name {redact(section)!r} cannot be written to an AWS INI file.",
            hint="Use a name without brackets, control characters or surrounding spaces "
            "(and not DEFAULT, which configparser applies to every profile).",
        )


def has_section(text: str, section: str) -> bool:
    """Whether `[section]` is in `text`, as botocore's reader would find it."""
    return any(line.kind == "header" and line.name == section for line in _split(text))


def _split(text: str) -> list[_Line]:
    lines: list[_Line] = []
    option_indent: int | None = None
    for match in re.finditer(r"([^\r\n]*)(\r\n|\n|\r|$)", text):
        body, ending = match.group(1), match.group(2)
        if not body and not ending:
            break  # the empty match at the very end
        stripped = body.strip()
        indent = len(body) - len(body.lstrip())
        if not stripped:
            lines.append(_Line(body, ending, "blank"))
        elif stripped.startswith(("#", ";")):
            lines.append(_Line(body, ending, "comment"))
        elif option_indent is not None and indent > option_indent:
            lines.append(_Line(body, ending, "continuation", indent=indent))
        else:
            header = _HEADER.match(stripped)
            option = _OPTION.match(stripped)
            if header:
                lines.append(_Line(body, ending, "header", header.group("name"), indent))
                option_indent = None
            elif option and option.group("name"):
                lines.append(_Line(body, ending, "option", option.group("name").rstrip().lower(), indent))
                option_indent = indent
            else:
                lines.append(_Line(body, ending, "other", indent=indent))
                option_indent = None
    return lines


def _option_end(lines: list[_Line], start: int) -> int:
    """Index after the last line of the option at `start` (its continuation lines included;
    blank and comment lines after the value are not part of it)."""
    end = start + 1
    for j in range(start + 1, len(lines)):
        if lines[j].kind == "continuation":
            end = j + 1
        elif lines[j].kind not in ("blank", "comment"):
            break
    return end


def _set_value(line: _Line, value: str) -> str:
    """The option line with its value replaced; the key and delimiter spelling kept."""
    match = re.match(r"(\s*.*?\s*[=:])(\s*)", line.text)
    assert match is not None  # an option line has a delimiter
    spacing = match.group(2) if match.end() < len(line.text) else " "
    return f"{match.group(1)}{spacing}{value}"


def set_section_values(text: str, section: str, values: Mapping[str, str]) -> str:
    """`text` with `values` set in `[section]`, everything else unchanged.

    Keys are written in lower case as given; an existing key keeps its spelling and delimiter.
    Raises UsageError when the section appears twice (botocore cannot read such a file).
    """
    check_section_name(section)
    for key, value in values.items():
        if key != key.strip().lower() or not key or "=" in key or ":" in key:
            raise ValueError(f"bad key {key!r}")
        if "\n" in value or "\r" in value:
            raise UsageError(f"The value for {key} contains a line break and cannot be written.")
    lines = _split(text)
    newline = next((line.ending for line in lines if line.ending), "\n")
    headers = [i for i, line in enumerate(lines) if line.kind == "header" and line.name == section]
    if len(headers) > 1:
        numbers = ", ".join(str(i + 1) for i in headers)
        raise UsageError(
            f"The file has the section [{redact(section)}] more than once (lines {numbers}); "
            "AWS SDKs cannot read it.",
            hint="Merge those sections by hand, then run again.",
        )
    out = [line.text + line.ending for line in lines]
    pending = dict(values)

    def new_lines(items: Mapping[str, str]) -> list[str]:
        return [f"{key} = {value}{newline}" for key, value in items.items()]

    if not headers:
        if out and not lines[-1].ending:
            out[-1] += newline
        if out and lines[-1].kind != "blank":
            out.append(newline)
        return "".join(out + [f"[{section}]{newline}"] + new_lines(pending))

    start = headers[0]
    stop = next((i for i in range(start + 1, len(lines)) if lines[i].kind == "header"), len(lines))
    insert_at = start + 1
    removed: set[int] = set()
    i = start + 1
    while i < stop:
        line = lines[i]
        if line.kind != "option":
            i += 1
            continue
        end = _option_end(lines, i)
        insert_at = end
        if line.name in values:
            if line.name in pending:
                out[i] = _set_value(line, pending.pop(line.name)) + (line.ending or newline)
                removed.update(range(i + 1, end))  # the old value's continuation lines
            else:
                removed.update(range(i, end))  # a duplicate of a key we set: SDKs refuse those
        i = end
    if pending:
        if not out[insert_at - 1].endswith(("\n", "\r")):
            out[insert_at - 1] += newline
        out[insert_at:insert_at] = ["".join(new_lines(pending))]
        removed = {j if j < insert_at else j + 1 for j in removed}
    return "".join(part for j, part in enumerate(out) if j not in removed)
