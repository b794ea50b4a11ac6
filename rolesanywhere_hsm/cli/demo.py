"""CLI: `demo`, the whole path on a throwaway SoftHSM token and the bundled emulator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rolesanywhere_hsm.cli import options as o


def demo(
    key_type: Annotated[
        str, typer.Option("--key-type", help="rsa2048, rsa3072, rsa4096, p256, p384 or p521.")
    ] = "p256",
    keep: Annotated[
        Optional[Path], typer.Option("--keep", help="Keep the token, CA and PIN file in this directory.")
    ] = None,
    debug: o.Debug = False,
) -> None:
    """Build a SoftHSM token and a CA, start the emulator, and get credentials with the key on the token."""
    o.configure_logging(debug)
    from rolesanywhere_hsm._dev.demo import run_demo

    run_demo(key_type, keep)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
