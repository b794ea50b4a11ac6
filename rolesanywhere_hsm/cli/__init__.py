"""The `rolesanywhere-hsm` command line.

`main()` is the front door. The command that SDKs run on every AWS call, `credential-process`,
goes straight to a small parser built from the option table (rolesanywhere_hsm.settings) and,
on a cache hit, prints credentials without importing typer, httpx, cryptography or a PKCS#11
module. Every other command builds the typer app (rolesanywhere_hsm.cli.typer_app) with its help.

Errors are caught here, in one place: the person-facing message goes to stderr as one line and
the process exits with the error's documented code; `--debug` (or RAH_DEBUG=1) shows the
traceback before it and the error's stable code (`[RAH-PIN-003]`, explained in docs/errors.md),
and keeps the exit code: scripts that branch on the exit code must not change behaviour when
someone turns on debugging.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a cache hit
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["app", "main"]

FAST_COMMANDS = frozenset({"credential-process"})
# Codes of the errors that are not RolesAnywhereError objects (docs/errors.md).
USAGE_CODE = "RAH-USE-002"  # the command line does not parse (click's usage errors)
INTERNAL_CODE = "RAH-BUG-001"  # an exception we did not expect: a bug
INTERRUPTED_CODE = "RAH-ABORT-001"  # Ctrl-C, or a prompt aborted


def __getattr__(name: str) -> Any:
    if name == "app":  # the typer app, built on first use (it costs typer's import)
        from rolesanywhere_hsm.cli.typer_app import app

        return app
    raise AttributeError(name)


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("RAH_DEBUG") == "1"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in FAST_COMMANDS and "--help" not in args and "-h" not in args:
        from rolesanywhere_hsm.cli.fast import run_fast

        # argv None: this is the process's own front door (console script, python -m), which
        # may leave out what its one HTTP request never uses (cli.fast.import_http_client).
        _guarded(lambda: run_fast(args[0], args[1:], own_process=argv is None), args)
        return
    _guarded(lambda: _run_typer(args), args)


def _run_typer(args: list[str]) -> None:
    """The typer app in non-standalone mode, so that click's usage errors come to us: they are
    rendered by cli/usage.py (exit 2), which never echoes an argument value (a PIN typed in
    the wrong place must not reach the terminal or a log)."""
    import typer

    from rolesanywhere_hsm.cli.typer_app import app
    from rolesanywhere_hsm.cli.usage import click_exceptions, usage_message

    clicks = click_exceptions()
    try:
        code = app(args=args, prog_name="rolesanywhere-hsm", standalone_mode=False)
    except clicks.ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # the help text, as click prints it; nothing typed to echo
        else:
            print(f"rolesanywhere-hsm: {_tagged(USAGE_CODE, args)}{usage_message(exc, args)}",
                  file=sys.stderr)
        sys.exit(exc.exit_code)
    except (getattr(clicks, "Abort", typer.Abort), typer.Abort):
        print(f"rolesanywhere-hsm: {_tagged(INTERRUPTED_CODE, args)}aborted", file=sys.stderr)
        sys.exit(1)
    if isinstance(code, int) and code:  # an explicit Exit(code) from a command (or 130)
        sys.exit(code)


def _tagged(code: str, args: list[str]) -> str:
    """`[CODE] ` before a message under --debug (the catalogue's key), nothing otherwise: the
    one-line message people and scripts see stays as it was."""
    return f"[{code}] " if _debug_requested(args) else ""


def _guarded(run: Callable[[], None], args: list[str]) -> None:
    """Run a command and turn our errors into one line + the documented exit code."""
    from rolesanywhere_hsm.errors import RolesAnywhereError
    from rolesanywhere_hsm.settings import CommandLineError

    try:
        run()
    except RolesAnywhereError as exc:
        if _debug_requested(args) and not isinstance(exc, CommandLineError):
            import traceback

            traceback.print_exc(file=sys.stderr)
        print(f"rolesanywhere-hsm: {_tagged(exc.code, args)}{exc.diagnostics()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print(f"rolesanywhere-hsm: {_tagged(INTERRUPTED_CODE, args)}interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if _debug_requested(args):
            import traceback

            traceback.print_exc(file=sys.stderr)
        print(
            f"rolesanywhere-hsm: {_tagged(INTERNAL_CODE, args)}internal error ({type(exc).__name__}); "
            "run again with --debug and report the traceback.",
            file=sys.stderr,
        )
        sys.exit(1)
