"""Checks of the official helper's options that every front end shares, without typer: the
fast path of `credential-process` runs them too."""

from __future__ import annotations

__all__ = ["check_store_flags"]


def check_store_flags(system_store_name: str | None, system_store_location: str | None) -> None:
    """The official helper's Windows certificate-store flags: accepted so that a copied command
    line works, and ignored here (there is no Windows store on this platform)."""
    for flag, value in (("--system-store-name", system_store_name), ("--system-store-location", system_store_location)):
        if value is not None:
            import logging  # only then: a cache hit must not import logging

            logging.getLogger("rolesanywhere_hsm.cli").debug(
                "%s applies to Windows certificate stores only; ignored", flag
            )
