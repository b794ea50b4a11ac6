"""Usage errors (exit 2) told without echoing what was typed.

click's own messages quote the offending argument: `credential-process ... --reuse-pin 1234`
prints "Got unexpected extra argument (1234)", and a bad option value is quoted in full. A
person who types a PIN in the wrong place then finds it in CI logs and terminal scrollback.
main() runs typer in non-standalone mode and renders click's usage errors here instead: the
message names options (ours, or the user's option *names* when they look like option names)
and what form a value must take, never a value or a stray argument.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence

import typer

__all__ = ["click_exceptions", "usage_message"]

# What a mistyped option or command name may look like to be shown: lowercase words, no
# digits (PINs are digits; a made-up option name with digits or capitals is more likely a
# secret pasted in the wrong place than a typo).
_OPTION_NAME = re.compile(r"--?[a-z][a-z-]{0,40}")
_COMMAND_NAME = re.compile(r"[a-z][a-z-]{0,40}")
_NO_SUCH_COMMAND = re.compile(r"No such command '(.*)'\.", re.DOTALL)
_SHOWN = "<value>"


def click_exceptions():  # type: ignore[no-untyped-def]
    """The module holding the click exceptions typer raises: `click.exceptions`, or
    `typer._click.exceptions` since typer vendors click (0.2x). Found through the public
    `typer.BadParameter` so that both work."""
    return sys.modules[typer.BadParameter.__module__]


def _typed_values(exc: Exception, argv: Sequence[str]) -> list[str]:
    """What was given for the option `exc` is about (`--opt value`, `--opt=value`, its
    environment variable)."""
    param = getattr(exc, "param", None)
    opts = getattr(param, "opts", None) or []
    envvars = getattr(param, "envvar", None) or []
    values = [os.environ.get(name, "") for name in ([envvars] if isinstance(envvars, str) else envvars)]
    for i, arg in enumerate(argv):
        for opt in opts:
            if arg == opt and i + 1 < len(argv):
                values.append(argv[i + 1])
            elif arg.startswith(opt + "="):
                values.append(arg[len(opt) + 1:])
    return [v for v in values if v]


def _without_values(text: str, values: Sequence[str]) -> str:
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, _SHOWN)
    return text


def _message(exc: Exception, argv: Sequence[str]) -> str:
    ex = click_exceptions()
    if isinstance(exc, ex.MissingParameter):
        return exc.format_message()  # built from our option names only
    if isinstance(exc, ex.BadParameter):
        # click and typer say what form the value must take, quoting the value: keep the
        # explanation, drop the value (it may be a PIN typed into the wrong option).
        return _without_values(exc.format_message(), _typed_values(exc, argv))
    if isinstance(exc, ex.NoSuchOption):
        typed = exc.option_name or ""
        name = typed if exc.possibilities or _OPTION_NAME.fullmatch(typed) else None
        if name is None:
            return "No such option (not shown: what was typed may be a secret)."
        text = f"No such option: {name}."
        if exc.possibilities:
            text += " Did you mean " + " or ".join(sorted(exc.possibilities)) + "?"
        return text
    if isinstance(exc, ex.BadOptionUsage):
        # "Option '--x' requires an argument." / "does not take a value": option names only
        # (click splits off what follows '=').
        if not re.fullmatch(r"--?[a-z0-9][a-z0-9-]*", exc.option_name or ""):
            return "An option is used wrongly (not shown: what was typed may be a secret)."
        return exc.format_message()
    text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    if text.startswith("Got unexpected extra argument"):
        return ("Got unexpected extra arguments (not shown: one may be a secret). Every value "
                "belongs to an option (--name value); flags such as --reuse-pin take none.")
    command = _NO_SUCH_COMMAND.fullmatch(text)
    if command is not None:
        name = command.group(1)
        shown = f" {name!r}" if _COMMAND_NAME.fullmatch(name) else " (not shown)"
        return f"No such command{shown}."
    if text == "Missing command.":
        return text
    return "The command line is not valid (details not shown: they would quote what was typed)."


def usage_message(exc: Exception, argv: Sequence[str]) -> str:
    """The lines to print for a click usage error `exc` raised while parsing `argv`: what is
    wrong, then where to find help; no argument value."""
    from rolesanywhere_hsm.redact import redact

    text = redact(_message(exc, argv))
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "rolesanywhere-hsm"
    text += f"\nTry '{command} --help' for help."
    return text
