"""CLI: `update`, the drop-in for `aws_signing_helper update`: keep a profile of the shared
credentials file filled with fresh temporary credentials.

With `--once` it is one CreateSession and one write. Without, it stays running on one
credential session (one token login for its whole life), refreshes ahead of expiry by the rule
in rolesanywhere_hsm/refresh.py, logs failed refreshes on stderr and leaves the old values in
the file until they are replaced, and exits 0 on SIGTERM or SIGINT. The PIN, if the token
needs one and no pin source gives it, is asked once at start on the terminal; later re-logins
(after the token dropped its session) reuse it from memory, and a PIN the token refused is
never presented again (the command then exits with code 5). See docs/update.md.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from rolesanywhere_hsm.cli import options as o

log = logging.getLogger("rolesanywhere_hsm.update")

# After a failed write (disk full, permissions), try again this often while credentials last.
WRITE_RETRY_SECONDS = 5.0

Profile = Annotated[
    str,
    typer.Option("--profile", help="Profile (section) of the shared credentials file to write."),
]
Once = Annotated[
    bool,
    typer.Option("--once", help="Write the credentials once and exit, instead of refreshing them until stopped."),
]


def update(
    certificate: o.Certificate,
    trust_anchor_arn: o.TrustAnchorArn,
    profile_arn: o.ProfileArn,
    role_arn: o.RoleArn,
    profile: Profile = "default",
    once: Once = False,
    private_key: o.PrivateKey = None,
    intermediates: o.Intermediates = None,
    region: o.Region = None,
    endpoint: o.Endpoint = None,
    session_duration: o.SessionDuration = 3600,
    role_session_name: o.RoleSessionName = None,
    no_verify_ssl: o.NoVerifySsl = False,
    ca_bundle: o.CaBundle = None,
    with_proxy: o.WithProxy = False,
    no_proxy: o.NoProxy = False,
    debug: o.Debug = False,
    pkcs8_password: o.Pkcs8Password = None,
    pkcs11_lib: o.Pkcs11Lib = None,
    reuse_pin: o.ReusePin = False,
) -> None:
    """Write temporary credentials into a profile of ~/.aws/credentials (AWS_SHARED_CREDENTIALS_FILE)."""
    o.configure_logging(debug)
    _log_to_stderr(debug)
    from rolesanywhere_hsm.credentials_file import shared_credentials_path
    from rolesanywhere_hsm.inifile import check_section_name
    from rolesanywhere_hsm.session import CredentialSession, RememberedSecret

    check_section_name(profile)  # before any login
    spec = o.credential_spec(
        certificate=certificate, trust_anchor_arn=trust_anchor_arn, profile_arn=profile_arn,
        role_arn=role_arn, private_key=private_key, intermediates=intermediates, region=region,
        endpoint=endpoint, session_duration=session_duration, role_session_name=role_session_name,
        no_verify_ssl=no_verify_ssl, ca_bundle=ca_bundle, no_proxy=no_proxy, pkcs11_lib=pkcs11_lib,
        reuse_pin=reuse_pin,
    )
    path = shared_credentials_path()
    if once:
        with CredentialSession(spec, pkcs8_password=pkcs8_password) as session:
            _write(path, profile, session.fetch())
        return
    with CredentialSession(spec, secret_callback=RememberedSecret(), pkcs8_password=pkcs8_password) as session:
        session.open()  # the one login, in the main thread: a prompt happens here or never
        _run(session, path, profile)


def _run(session, path, profile: str) -> None:  # type: ignore[no-untyped-def]
    """Refresh until SIGTERM/SIGINT, writing each new set of credentials. Runs in the main
    thread (no background thread: nothing else to serve), waiting on an Event the signal
    handlers set, so a stop is noticed at once even in the middle of a long wait."""
    import signal
    import threading

    from rolesanywhere_hsm.refresh import RefreshingCredentials

    engine = RefreshingCredentials(session.fetch)
    credentials = engine.refresh()  # the first fetch: its error ends the command with its code
    _write(path, profile, credentials)
    written = engine.refresh_count

    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    times = engine.refresh_times()
    if times is not None:
        log.info("next refresh at %s", times.advisory.strftime("%H:%M:%S"))
    while not stop.is_set():
        wait = engine.next_wait()
        if wait is None:  # refreshing stopped for good (a refused PIN): exit with its code
            assert engine.fatal_error is not None
            raise engine.fatal_error
        if engine.refresh_count != written:
            try:
                _write(path, profile, engine.current())
                written = engine.refresh_count
            except Exception as exc:  # noqa: BLE001 (logged; retried while the credentials last)
                from rolesanywhere_hsm.errors import RolesAnywhereError

                text = exc.message if isinstance(exc, RolesAnywhereError) else type(exc).__name__
                log.warning("could not write the credentials (%s); retrying in %.0f s", text,
                            WRITE_RETRY_SECONDS)
                wait = min(wait, WRITE_RETRY_SECONDS)
        stop.wait(wait)
    log.info("stopped")


def _write(path, profile: str, credentials) -> None:  # type: ignore[no-untyped-def]
    from rolesanywhere_hsm.credentials import format_expiration
    from rolesanywhere_hsm.credentials_file import write_profile

    target = write_profile(path, profile, credentials)
    log.info("wrote profile %s in %s (key %s, expires %s)", profile, target,
             credentials.access_key_id, format_expiration(credentials.expiration))


def _log_to_stderr(debug: bool) -> None:
    """Progress and failed refreshes on stderr, one line each, never a secret. (`--debug`
    has already set up a handler for everything.)"""
    if debug:
        return
    from rolesanywhere_hsm.redact import RedactingFilter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("rolesanywhere-hsm update: %(message)s"))
    handler.addFilter(RedactingFilter())  # no pin-value or URL password in a log line
    for name in ("rolesanywhere_hsm.update", "rolesanywhere_hsm.refresh", "rolesanywhere_hsm.session"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def register(app: typer.Typer) -> None:
    app.command("update")(update)
