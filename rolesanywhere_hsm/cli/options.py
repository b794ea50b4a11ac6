"""Table options for commands that are not built with `table_command` (tokens, provisioning,
demo): `--debug`, `--pkcs11-lib` and `--pkcs8-password` as typer parameter types made from the option table's
entries, so each option is still defined once (rolesanywhere_hsm.settings.OPTIONS)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from rolesanywhere_hsm.cli.fast import configure_logging  # one implementation, re-exported
from rolesanywhere_hsm.cli.table import option_help
from rolesanywhere_hsm.settings import option

__all__ = ["Debug", "Pkcs11Lib", "Pkcs8Password", "configure_logging"]


def _typer_option(name: str) -> Any:
    opt = option(name)
    return typer.Option(opt.flag, help=option_help(opt), envvar=opt.env, metavar=opt.metavar,
                        show_default=False, show_envvar=False)


Debug = Annotated[bool, _typer_option("debug")]
Pkcs11Lib = Annotated[Optional[str], _typer_option("pkcs11-lib")]  # noqa: UP045
Pkcs8Password = Annotated[Optional[str], _typer_option("pkcs8-password")]  # noqa: UP045
