"""CLI: `cache list` and `cache clear`, to see and drop what `credential-process --cache` keeps.

`list` shows names, descriptions and times only: the entries hold secrets, and listing them is
not a reason to print those.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated

import typer

__all__ = ["register"]

cache_app = typer.Typer(help="See or clear the credential cache of `credential-process --cache`.",
                        no_args_is_help=True, add_completion=False, rich_markup_mode=None)


@cache_app.command("list")
def list_entries(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List cached entries: description, issue and expiry times, state. Never a secret."""
    from rolesanywhere_hsm.cache import CredentialCache
    from rolesanywhere_hsm.credentials import format_expiration

    cache = CredentialCache()
    now = dt.datetime.now(dt.timezone.utc)
    rows = []
    for entry in cache.entries():
        if entry.problem:
            state = f"untrusted: {entry.problem}"
        elif entry.expiration is not None and entry.expiration <= now:
            state = "expired"
        else:
            state = "valid"
        rows.append({
            "file": entry.name,
            "description": entry.description,
            "issued": format_expiration(entry.issued_at) if entry.issued_at else None,
            "expires": format_expiration(entry.expiration) if entry.expiration else None,
            "state": state,
        })
    if as_json:
        print(json.dumps({"directory": str(cache.directory), "entries": rows}, indent=2))
        return
    print(f"cache directory: {cache.directory}")
    if not rows:
        print("no entries")
    for row in rows:
        print(f"{row['file']}  {row['state']}  expires {row['expires'] or '-'}  {row['description']}")


@cache_app.command("clear")
def clear() -> None:
    """Remove every cached entry (the next run fetches new credentials)."""
    from rolesanywhere_hsm.cache import CredentialCache

    cache = CredentialCache()
    removed = cache.clear()
    print(f"removed {removed} entr{'y' if removed == 1 else 'ies'} from {cache.directory}")


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
