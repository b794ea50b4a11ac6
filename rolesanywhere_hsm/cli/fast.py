"""The fast path of the commands SDKs run: option table in, credentials out, nothing heavy first.

`run_fast()` parses argv with the option table's own parser, merges environment and profile
(`settings_for`), validates the credential source (`CredentialSpec`) and, with `--cache`, looks
in the cache; only a miss imports the session layer, httpx, the signers and the PKCS#11 module.
The typer command of the same name calls `credential_process()` below with the same settings,
so `--help` and the fast path cannot drift apart (a parity test feeds both the same argv).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from rolesanywhere_hsm.settings import Settings, parse_args, settings_for

if TYPE_CHECKING:
    from rolesanywhere_hsm.credentials import Credentials

__all__ = ["credential_process", "run_fast"]


def run_fast(command: str, argv: list[str]) -> None:
    """Run `command` (one of cli.FAST_COMMANDS) from its argv, without typer."""
    flags = parse_args(command, argv)
    if flags is None:  # --help: typer's help is the documented one
        from rolesanywhere_hsm.cli.typer_app import app

        app(args=[command, *argv], prog_name="rolesanywhere-hsm")
        return
    credential_process(settings_for(command, flags))


def configure_logging(debug: bool) -> None:
    """Debug logs go to stderr (stdout belongs to the SDK reading our JSON), through the
    redaction filter: no pin-value or URL password in a log line."""
    if not debug:
        return
    import logging

    from rolesanywhere_hsm.redact import RedactingFilter

    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG,
                        format="rolesanywhere-hsm: %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    # httpx/httpcore debug lines carry headers; ours are enough and carry no secrets.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def credential_process(settings: Settings) -> None:
    """Print temporary credentials as the JSON that AWS `credential_process` reads.

    Stdout gets exactly one JSON object on success and nothing on failure: the SDK that runs us
    parses it; everything for people goes to stderr.
    """
    from rolesanywhere_hsm.cli.compat import check_store_flags
    from rolesanywhere_hsm.session import CredentialSpec

    configure_logging(settings["debug"])
    check_store_flags(settings["system-store-name"], settings["system-store-location"])
    spec = CredentialSpec.from_settings(settings)

    def fetch() -> Credentials:
        from rolesanywhere_hsm.session import CredentialSession

        with CredentialSession(spec, pkcs8_password=settings["pkcs8-password"],
                               tpm_key_password=settings["tpm-key-password"]) as session:
            return session.fetch()

    if settings["cache"]:
        from rolesanywhere_hsm.cache import CredentialCache
        from rolesanywhere_hsm.redact import redact

        description = f"{spec.role_arn} with {redact(spec.certificate)}"
        credentials = CredentialCache().get_or_fetch(spec.cache_key(), fetch, description=description)
    else:
        credentials = fetch()
    sys.stdout.write(credentials.credential_process_json() + "\n")
    sys.stdout.flush()
