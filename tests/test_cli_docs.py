"""docs/cli.md is checked against the tool: every option each command's `--help` shows (taken
from the typer app itself) is documented in that command's section, so docs and tool cannot
drift apart. A section may say "every option of `credential-process`" to take that section's
options by reference (update, serve, doctor)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer

from rolesanywhere_hsm.cli.typer_app import app

CLI_MD = Path(__file__).parents[1] / "docs" / "cli.md"
BY_REFERENCE = "every option of `credential-process`"


def _commands() -> dict[str, Any]:
    """name -> click command (typer may bring its own click, so no isinstance on click's types)."""
    group = typer.main.get_command(app)
    found: dict[str, Any] = {}
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        if hasattr(command, "commands"):
            found.update({f"{name} {sub}": cmd for sub, cmd in command.commands.items()})
        else:
            found[name] = command
    return found


def _shown_options(command: Any) -> list[str]:
    """Every long flag `--help` shows, a switch's "off" flag (`--no-cache`) included."""
    return [opt for param in command.params
            if param.param_type_name == "option" and not getattr(param, "hidden", False)
            for opt in (*param.opts, *getattr(param, "secondary_opts", ()))
            if opt.startswith("--") and opt != "--help"]


def _sections() -> dict[str, str]:
    text = CLI_MD.read_text()
    parts = re.split(r"^## +(.+)$", text, flags=re.M)
    return {title.strip().strip("`"): body for title, body in zip(parts[1::2], parts[2::2])}


def _documented(flag: str, body: str) -> bool:
    return re.search(re.escape(flag) + r"(?![a-z0-9-])", body) is not None


COMMANDS = _commands()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_in_help_is_in_cli_md(name: str) -> None:
    sections = _sections()
    assert name in sections, f"docs/cli.md has no '## {name}' section"
    body = sections[name]
    if BY_REFERENCE in " ".join(body.split()):
        body += sections["credential-process"]
    missing = [flag for flag in _shown_options(COMMANDS[name]) if not _documented(flag, body)]
    assert not missing, f"docs/cli.md '## {name}' does not document {missing}"


def test_the_check_can_fail() -> None:
    assert not _documented("--config", "`--config-profile NAME`")
    assert _documented("--config", "`--config FILE`")
    assert "--config-profile" in _shown_options(COMMANDS["credential-process"])
    assert "--no-cache" in _shown_options(COMMANDS["credential-process"])  # "off" flags are checked too
