"""typer commands built from the option table (rolesanywhere_hsm.settings).

A command written with `table_command` takes every option the table lists for it; typer only
parses the command line (each option defaults to None, meaning "not given"), and
`settings_for()` then applies the environment, the named profile and the defaults. So the
flags, the environment variables, the profile keys and the help come from one place.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Optional

import typer

from rolesanywhere_hsm.settings import Option, Settings, options_for, settings_for

__all__ = ["extra_option", "option_help", "table_command", "table_parameter"]


def option_help(opt: Option) -> str:
    """The table's help plus where else the value may come from, as `--help` shows it."""
    extra = []
    if opt.default not in (None, False):
        extra.append(f"default {opt.default:g}" if isinstance(opt.default, float) else f"default {opt.default}")
    if opt.env:
        extra.append(f"env {opt.env}")
    if not opt.in_profile:
        extra.append("not in profiles")
    return opt.help + (f" [{'; '.join(extra)}]" if extra else "")


def table_parameter(opt: Option) -> inspect.Parameter:
    """The typer parameter of one table option (None by default: "not given")."""
    declaration = opt.flag if opt.negation_flag is None else f"{opt.flag}/{opt.negation_flag}"
    info = typer.Option(declaration, help=option_help(opt), metavar=opt.metavar, show_default=False)
    annotation = Annotated[Optional[opt.type], info]  # type: ignore[name-defined]  # noqa: UP045
    return inspect.Parameter(opt.attr, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=annotation)


def extra_option(name: str, annotation: Any, default: Any, *decls: str, **info: Any) -> inspect.Parameter:
    """A command's own option (not in the table), as `table_command(extra=...)` takes it:
    `name` is the keyword `run` receives, `decls` and `info` go to `typer.Option`."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[annotation, typer.Option(*decls, **info)])


def table_command(command: str, run: Callable[..., None], *,
                  extra: Sequence[inspect.Parameter] = (), doc: str | None = None) -> Callable[..., None]:
    """A function typer can register as `command`: its parameters are the table's options for
    `command` (plus `extra`, typer-annotated parameters the table does not hold, passed to `run`
    by name); it calls `run(settings, **extra)`."""
    table = options_for(command)
    extra_names = [param.name for param in extra]
    clash = set(extra_names) & {opt.attr for opt in table}
    if clash:  # one definition per option: a command's own option must not shadow the table's
        raise ValueError(f"{command}: {sorted(clash)} are already table options")

    def handler(**kwargs: Any) -> None:
        flags = {opt.name: kwargs[opt.attr] for opt in table if kwargs.get(opt.attr) is not None}
        settings: Settings = settings_for(command, flags)
        run(settings, **{name: kwargs[name] for name in extra_names})

    params = [table_parameter(opt) for opt in table] + list(extra)
    handler.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    handler.__annotations__ = {param.name: param.annotation for param in params}
    handler.__doc__ = doc or run.__doc__
    handler.__name__ = command.replace("-", "_")
    return handler
