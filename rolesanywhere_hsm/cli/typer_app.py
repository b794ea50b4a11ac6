"""The typer app: every command, with typer's help and parsing.

Each command group lives in its own module with a `register(app)` function. Errors are not
handled here: `rolesanywhere_hsm.cli.main()` catches them in one place.
"""

from __future__ import annotations

import importlib

import typer

__all__ = ["app"]

# Modules that add commands; each defines register(app). Imported in order at start-up, so
# they must keep heavy imports (httpx, cryptography, pkcs11) inside their command functions.
_COMMAND_MODULES = (
    "credential_process",
    "update",
    "certificate",
    "tokens",
    "emulator",
    "serve",
    "demo",
    "provision",
    "attest",
    "doctor",
    "cache",
    "configure",
    "devca",
)

app = typer.Typer(
    name="rolesanywhere-hsm",
    help="Temporary AWS credentials from IAM Roles Anywhere, signed inside a PKCS#11 token.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # locals may hold a PIN; main() decides what is shown
    rich_markup_mode=None,
)

for _name in _COMMAND_MODULES:
    importlib.import_module(f"rolesanywhere_hsm.cli.{_name}").register(app)


def _print_version(value: bool) -> None:
    if value:
        from rolesanywhere_hsm import __version__

        print(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
    ),
) -> None:
    """Temporary AWS credentials from IAM Roles Anywhere, signed inside a PKCS#11 token."""


@app.command("version")
def version() -> None:
    """Print the version."""
    from rolesanywhere_hsm import __version__

    print(__version__)
