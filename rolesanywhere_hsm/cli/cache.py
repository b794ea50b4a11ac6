"""CLI: `cache list` and `cache clear`, to see and drop what `credential-process --cache` keeps.

`list` shows names, descriptions and times only: the entries hold secrets, and listing them is
not a reason to print those. `clear` removes only what is provably an entry (cache.py's module
docstring), and nothing at all in a directory that fails the cache's checks.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

__all__ = ["register"]

T = TypeVar("T")

cache_app = typer.Typer(help="See or clear the credential cache of `credential-process --cache`.",
                        no_args_is_help=True, add_completion=False, rich_markup_mode=None)


@cache_app.command("list")
def list_entries(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List cached entries: description, issue and expiry times, state. Never a secret."""
    from rolesanywhere_hsm.credentials import format_expiration
    from rolesanywhere_hsm.redact import without_pin_attributes

    cache, found = _checked(lambda cache: cache.entries())
    now = dt.datetime.now(dt.timezone.utc)
    rows = []
    for entry in found:
        if entry.problem:
            state = f"untrusted: {entry.problem}"
        elif entry.expiration is not None and entry.expiration <= now:
            state = "expired"
        else:
            state = "valid"
        rows.append({
            "file": entry.name,
            # entries written before PIN attributes were left out of descriptions lose them here
            "description": " ".join(without_pin_attributes(word) for word in entry.description.split(" ")),
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
    cache, (removed, kept) = _checked(lambda cache: cache.clear())
    print(f"removed {removed} entr{'y' if removed == 1 else 'ies'} from {cache.directory}")
    if kept:
        print(f"left {kept} other file{'' if kept == 1 else 's'} there alone: not entries of this cache")


def _checked(action: Callable[[Any], T]) -> tuple[Any, T]:
    """`action` on the cache; a directory that fails the cache's checks is a usage error."""
    from rolesanywhere_hsm.cache import CacheDirectoryError, CredentialCache
    from rolesanywhere_hsm.errors import UsageError

    cache = CredentialCache()
    try:
        return cache, action(cache)
    except CacheDirectoryError as exc:
        raise UsageError(
            f"The cache directory {cache.directory} is not used: {exc}; nothing was changed.",
            hint="Point RAH_CACHE_DIR at a directory of your own with mode 0700 (or unset it).",
        ) from None


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
