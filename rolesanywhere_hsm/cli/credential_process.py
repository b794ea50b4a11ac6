"""CLI: `credential-process`, the drop-in for `aws_signing_helper credential-process`.

Its options come from the option table; the work is `cli.fast.credential_process`, which the
front door also calls directly without typer (see rolesanywhere_hsm.cli).
"""

from __future__ import annotations

import typer

from rolesanywhere_hsm.cli.fast import credential_process
from rolesanywhere_hsm.cli.table import table_command


def register(app: typer.Typer) -> None:
    app.command("credential-process")(table_command("credential-process", credential_process))
