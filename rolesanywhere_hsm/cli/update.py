"""CLI: `update`, the drop-in for `aws_signing_helper update`: keep a profile of the shared
credentials file filled with fresh temporary credentials.

With `--once` it is one CreateSession and one write. Without, it stays running on one
credential session (one token login for its whole life), refreshes ahead of expiry by the rule
in rolesanywhere_hsm/refresh.py, logs failed refreshes on stderr and leaves the old values in
the file until they are replaced, and exits 0 on SIGTERM or SIGINT (signals, stderr logging
and sd_notify: rolesanywhere_hsm/cli/longrun.py; READY=1 once the first credentials are written). The PIN, if the token
needs one and no pin source gives it, is asked once at start on the terminal; later re-logins
(after the token dropped its session) reuse it from memory, and a PIN the token refused is
never presented again (the command then exits with code 5). See docs/update.md.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

import typer

from rolesanywhere_hsm.cli.fast import configure_logging
from rolesanywhere_hsm.cli.table import extra_option, table_command

if TYPE_CHECKING:
    from rolesanywhere_hsm.settings import Settings

log = logging.getLogger("rolesanywhere_hsm.update")

# After a failed write (disk full, permissions), try again this often while credentials last.
WRITE_RETRY_SECONDS = 5.0

def update(settings: Settings, *, profile: str = "default", once: bool = False,
           metrics_port: int | None = None) -> None:
    """Write temporary credentials into a profile of ~/.aws/credentials (AWS_SHARED_CREDENTIALS_FILE)."""
    configure_logging(settings["debug"])
    from rolesanywhere_hsm.cli.compat import check_store_flags
    from rolesanywhere_hsm.credentials_file import shared_credentials_path
    from rolesanywhere_hsm.inifile import check_section_name
    from rolesanywhere_hsm.session import CredentialSession, CredentialSpec
    from rolesanywhere_hsm.signers.secretpolicy import SecretPolicy

    check_section_name(profile)  # before any login
    check_store_flags(settings["system-store-name"], settings["system-store-location"])
    spec = CredentialSpec.from_settings(settings)
    secrets = {"pkcs8_password": settings["pkcs8-password"],
               "tpm_key_password": settings["tpm-key-password"]}
    path = shared_credentials_path()
    if once:
        if metrics_port is not None:
            from rolesanywhere_hsm.errors import UsageError

            raise UsageError("--metrics-port needs update to keep running; drop --once.")
        from rolesanywhere_hsm.cli.longrun import log_to_stderr, remove_handler

        handler = None if settings["debug"] else log_to_stderr(LOG_PREFIX, LOGGERS, propagate=False)
        try:
            with CredentialSession(spec, secret_policy=SecretPolicy.terminal(), **secrets) as session:
                if settings["audit-log"]:
                    from rolesanywhere_hsm.audit import AuditLog

                    session.observers.append(AuditLog(settings["audit-log"]))
                _write(path, profile, session.fetch())
        finally:
            if handler is not None:
                remove_handler(handler, LOGGERS)
        return
    from rolesanywhere_hsm.cli.serve import _observe

    holder: list = []
    with _life(settings["debug"], holder) as life, \
            CredentialSession(spec, secret_policy=SecretPolicy.terminal(remember=True), rotate=True, **secrets) as session:
        metrics = _observe(session, settings)
        health = _health_server(metrics_port, metrics) if metrics_port is not None else None
        try:
            session.open()  # the one login, in the main thread: a prompt happens here or never
            _run(session, path, profile, life, holder, health)
        finally:
            if health is not None:
                health[0].stop()


def _health_server(port: int, metrics):  # type: ignore[no-untyped-def]
    """/livez, /readyz and /metrics on 127.0.0.1:PORT, served from a thread (the refresh loop
    owns the main thread). Bound before the login: a busy port costs no PIN."""
    from rolesanywhere_hsm.errors import UsageError
    from rolesanywhere_hsm.httpserver import HttpServer
    from rolesanywhere_hsm.servers.app import HealthApp

    ready: list = [lambda: False]
    app = HealthApp(lambda: ready[0](), metrics)
    server = HttpServer(app, host="127.0.0.1", port=port)
    try:
        server.start_in_thread("rah-update-metrics")
    except OSError as exc:
        raise UsageError(f"cannot listen on 127.0.0.1:{port} (--metrics-port): {exc.strerror or exc}") from None
    log.info("health and metrics on http://127.0.0.1:%d/ (livez, readyz, metrics)", server.port)
    return server, ready


def _run(session, path, profile: str, life, holder: list, health=None) -> None:  # type: ignore[no-untyped-def]
    """Refresh until SIGTERM/SIGINT, writing each new set of credentials. Runs in the main
    thread (no background thread: nothing else to serve), waiting on the stop the signal
    handlers set, so a stop is noticed at once even in the middle of a long wait. Each wait is
    at most refresh.WAKE_INTERVAL (next_wait's bound), so a wall-clock jump (suspend/resume,
    an NTP step) is noticed within seconds and the file never keeps expired keys for long."""
    from rolesanywhere_hsm.refresh import RefreshingCredentials

    engine = RefreshingCredentials(session.fetch)
    holder.append(engine)
    if health is not None:
        health[1][0] = _holds_valid(engine)
    credentials = engine.refresh()  # the first fetch: its error ends the command with its code
    _write(path, profile, credentials)
    written = engine.refresh_count
    if engine.wait_ready(0) and not life.stop.is_set():  # the first credentials are held (and written)
        life.ready(f"profile {profile} written")
    stop = life.stop
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
        life.wait(wait)
    log.info("stopped")


def _holds_valid(engine):  # type: ignore[no-untyped-def]
    """/readyz's answer: the engine holds credentials not yet past usable (read only: in
    update's loop mode the engine refreshes only from the main thread)."""

    def ready() -> bool:
        times = engine.refresh_times()
        if times is None or engine.fatal_error is not None:
            return False
        import datetime as dt

        return dt.datetime.now(dt.timezone.utc) < times.usable_until

    return ready


def _write(path, profile: str, credentials) -> None:  # type: ignore[no-untyped-def]
    from rolesanywhere_hsm.credentials import format_expiration
    from rolesanywhere_hsm.credentials_file import write_profile

    target = write_profile(path, profile, credentials)
    log.info("wrote profile %s in %s (key %s, expires %s)", profile, target,
             credentials.access_key_id, format_expiration(credentials.expiration))


LOG_PREFIX = "rolesanywhere-hsm update: "
LOGGERS = ("rolesanywhere_hsm.update", "rolesanywhere_hsm.refresh", "rolesanywhere_hsm.session",
           "rolesanywhere_hsm.httpserver")


def _life(debug: bool, holder: list):  # type: ignore[no-untyped-def]
    """Signals, sd_notify and the stderr log: progress and failed refreshes, one line each,
    never a secret (`--debug` has already set up a handler for everything); SIGUSR1 logs the
    refresh state."""
    from rolesanywhere_hsm.cli.longrun import LongRunning, refresh_state

    return LongRunning("update", prefix=LOG_PREFIX, loggers=LOGGERS, debug=debug, propagate=False,
                       state=lambda: refresh_state(holder[0] if holder else None))


def register(app: typer.Typer) -> None:
    app.command("update")(table_command("update", update, extra=[
        extra_option("profile", str, "default", "--profile", metavar="NAME",
                     help="Profile (section) of the shared credentials file to write."),
        extra_option("once", bool, False, "--once", help="Write the credentials once and exit, "
                     "instead of refreshing them until stopped."),
        extra_option("metrics_port", Optional[int], None, "--metrics-port", metavar="PORT",  # noqa: UP045
                     min=0, max=65535, help="Serve /livez, /readyz and /metrics on 127.0.0.1:PORT "
                     "while running (docs/operations.md)."),
    ]))
