"""The `rolesanywhere-hsm` command line: typer commands that parse options and call the library.

Each command group lives in its own module with a `register(app)` function. Errors are caught
in exactly one place, `main()`, which prints the person-facing message on stderr and exits with
the error's code; `--debug` (or RAH_DEBUG=1) shows the traceback before it, and keeps the code:
scripts that branch on the exit code must not change behaviour when someone turns on debugging.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import typer

from rolesanywhere_hsm.errors import RolesAnywhereError

__all__ = ["app", "main"]

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
    "doctor",
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


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("RAH_DEBUG") == "1"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and turn our errors into one line + exit code.

    typer runs in non-standalone mode so that click's usage errors come here too: they are
    rendered by cli/usage.py (exit 2), which never echoes an argument value (a PIN typed in
    the wrong place must not reach the terminal or a log).
    """
    from rolesanywhere_hsm.cli.usage import click_exceptions, usage_message

    clicks = click_exceptions()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = app(args=args, prog_name="rolesanywhere-hsm", standalone_mode=False)
    except clicks.ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # the help text, as click prints it; nothing typed to echo
        else:
            print(f"rolesanywhere-hsm: {usage_message(exc, args)}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (getattr(clicks, "Abort", typer.Abort), typer.Abort):
        print("rolesanywhere-hsm: aborted", file=sys.stderr)
        sys.exit(1)
    except RolesAnywhereError as exc:
        if _debug_requested(args):
            traceback.print_exc(file=sys.stderr)
        print(f"rolesanywhere-hsm: {exc.diagnostics()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("rolesanywhere-hsm: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if _debug_requested(args):
            traceback.print_exc(file=sys.stderr)
        print(
            f"rolesanywhere-hsm: internal error ({type(exc).__name__}); "
            "run again with --debug and report the traceback.",
            file=sys.stderr,
        )
        sys.exit(1)
    if isinstance(code, int) and code:  # an explicit Exit(code) from a command (or 130)
        sys.exit(code)
