"""The `rolesanywhere-hsm` command line: typer commands that parse options and call the library.

Each command group lives in its own module with a `register(app)` function. Errors are caught
in exactly one place, `main()`, which prints the person-facing message on stderr and exits with
the error's code; `--debug` (or RAH_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from rolesanywhere_hsm.errors import RolesAnywhereError

__all__ = ["app", "main"]

# Modules that add commands; each defines register(app). Imported in order at start-up, so
# they must keep heavy imports (httpx, cryptography, pkcs11) inside their command functions.
_COMMAND_MODULES = (
    "credential_process",
    "certificate",
    "emulator",
    "demo",
    "cache",
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


@app.command("version")
def version() -> None:
    """Print the version."""
    from rolesanywhere_hsm import __version__

    print(__version__)


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("RAH_DEBUG") == "1"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and turn our errors into one line + exit code.

    typer's standalone mode handles usage errors itself (exit 2, usage on stderr); anything
    else that escapes a command arrives here.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=args, prog_name="rolesanywhere-hsm")
    except RolesAnywhereError as exc:
        if _debug_requested(args):
            raise
        print(f"rolesanywhere-hsm: {exc.diagnostics()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("rolesanywhere-hsm: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if _debug_requested(args):
            raise
        print(
            f"rolesanywhere-hsm: internal error ({type(exc).__name__}); "
            "run again with --debug and report the traceback.",
            file=sys.stderr,
        )
        sys.exit(1)
