"""Checks of the official helper's options that every front end shares, without typer: the
fast path of `credential-process` runs them too."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a cache hit
if TYPE_CHECKING:
    from typing import Any

__all__ = ["check_selector_supported", "check_store_flags"]


def check_store_flags(system_store_name: str | None, system_store_location: str | None) -> None:
    """The official helper's Windows certificate-store flags: accepted so that a copied command
    line works, and ignored here (there is no Windows store on this platform)."""
    import logging

    for flag, value in (("--system-store-name", system_store_name), ("--system-store-location", system_store_location)):
        if value is not None:
            logging.getLogger("rolesanywhere_hsm.cli").debug(
                "%s applies to Windows certificate stores only; ignored", flag
            )


def check_selector_supported(certificate: str | None, selector: Any) -> None:
    """--cert-selector picks among the certificates of a file today. Among the certificates of
    every token it needs the token inventory (not wired yet), so say so instead of ignoring it."""
    if selector is None:
        return
    from rolesanywhere_hsm.errors import UsageError

    if not certificate:
        raise UsageError(
            "--cert-selector without --certificate (searching every token) is not supported yet.",
            hint="Give --certificate pkcs11:...;id=... or a certificate file, with --cert-selector to pick in it.",
        )
    if certificate.lower().startswith("pkcs11:"):
        raise UsageError(
            "--cert-selector with a pkcs11: certificate is not supported yet.",
            hint="Select the certificate with the URI (id=, object=, serial=); "
            "`read-certificate-data --certificate 'pkcs11:...'` lists what matches.",
        )
