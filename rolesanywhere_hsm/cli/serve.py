"""CLI: `serve`, the drop-in for `aws_signing_helper serve`: IMDSv2 and container-credentials
endpoints backed by one long-lived credential session.

The order at start matters: options are checked, the port is bound (a busy port is a one-line
error before any PIN is asked), the token is opened and the first credentials fetched in the
main thread (a PIN prompt happens here, never later in a background thread), then the refresh
thread starts and the server answers from memory. SIGTERM or SIGINT: stop accepting, finish
the answers in progress, stop refreshing, close the token session, exit 0 (signals, stderr
logging and sd_notify: rolesanywhere_hsm/cli/longrun.py).
Heavy imports live inside the command: every CLI start-up imports this module.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from rolesanywhere_hsm.cli.fast import configure_logging
from rolesanywhere_hsm.cli.table import extra_option, table_command
from rolesanywhere_hsm.errors import UsageError
from rolesanywhere_hsm.redact import redact

if TYPE_CHECKING:
    from rolesanywhere_hsm.cli.longrun import LongRunning
    from rolesanywhere_hsm.credentials import Credentials
    from rolesanywhere_hsm.metrics import Metrics
    from rolesanywhere_hsm.session import CredentialSession
    from rolesanywhere_hsm.httpserver import HttpServer
    from rolesanywhere_hsm.refresh import RefreshingCredentials
    from rolesanywhere_hsm.settings import Settings

__all__ = ["register"]

DEFAULT_PORT = 9911
DEFAULT_HOP_LIMIT = 64


def _listen_address(address: str, allow_non_loopback: bool) -> tuple[str, bool]:
    """(IP literal to bind, whether it is loopback); refuses what the flags do not allow."""
    import ipaddress

    text = address.strip()
    if not text:
        raise UsageError("--address is empty; give an IP address such as 127.0.0.1")
    if text == "localhost":
        text = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        raise UsageError(f"--address {redact(address)} is not an IP address (e.g. 127.0.0.1 or ::1)") from None
    if ip.is_loopback:
        return str(ip), True
    if not allow_non_loopback:
        raise UsageError(
            f"--address {ip} is not a loopback address: anyone who can reach it could take the "
            "credentials. Add --allow-non-loopback to mean it (IMDS is then off and only the "
            "token-protected container endpoint answers; see docs/serve.md)"
        )
    return str(ip), False


def _base_url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _announce(server: HttpServer, host: str, scheme: str, imds: bool, token: str,
              token_file: Path | None, expiration: str) -> None:
    from rolesanywhere_hsm.servers.container import CONTAINER_PATH

    base = _base_url(scheme, host, server.port)
    lines = [f"rolesanywhere-hsm serve listening on {base} (credentials valid until {expiration})"]
    if imds:
        lines.append(f"export AWS_EC2_METADATA_SERVICE_ENDPOINT={base}/")
    lines.append(f"export AWS_CONTAINER_CREDENTIALS_FULL_URI={base}{CONTAINER_PATH}")
    if token_file is not None:
        lines.append(f"export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={token_file.resolve()}")
    else:
        lines.append(f"export AWS_CONTAINER_AUTHORIZATION_TOKEN={token}")
    print("\n".join(lines), file=sys.stderr, flush=True)


def _check_port_file(port_file: Path) -> None:
    """Fail now, before any PIN is asked, if --port-file could not be written once serving: a
    file made and removed in its directory, as the real write will (atomically) do."""
    import os
    import tempfile

    shown = redact(str(port_file))
    if port_file.is_dir():
        raise UsageError(f"--port-file {shown} is a directory; name a file")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{port_file.name}.", dir=port_file.absolute().parent)
    except OSError as exc:
        raise UsageError(f"cannot write --port-file {shown}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


def serve(settings: Settings, *, port: int = DEFAULT_PORT, address: str = "127.0.0.1",
          allow_non_loopback: bool = False, no_imds: bool = False, hop_limit: int = DEFAULT_HOP_LIMIT,
          container_token_file: Path | None = None, tls_cert: Path | None = None,
          tls_key: Path | None = None, port_file: Path | None = None) -> None:
    """Serve credentials to SDKs over IMDSv2 and the container-credentials endpoint, refreshing
    them in the background with one token login, until SIGTERM or SIGINT."""
    debug = settings["debug"]
    configure_logging(debug)
    host, loopback = _listen_address(address, allow_non_loopback)
    if tls_key is not None and tls_cert is None:
        raise UsageError("--tls-key needs --tls-cert")

    import asyncio

    from rolesanywhere_hsm.credentials import format_expiration
    from rolesanywhere_hsm.files import write_atomic
    from rolesanywhere_hsm.httpserver import HttpServer, tls_context
    from rolesanywhere_hsm.refresh import RefreshingCredentials
    from rolesanywhere_hsm.servers.app import ServeApp, access_logger
    from rolesanywhere_hsm.servers.container import generate_token, read_token_file
    from rolesanywhere_hsm.servers.imds import role_name_of
    from rolesanywhere_hsm.session import CredentialSession, CredentialSpec
    from rolesanywhere_hsm.signers.secretpolicy import SecretPolicy

    from rolesanywhere_hsm.cli.compat import check_store_flags

    check_store_flags(settings["system-store-name"], settings["system-store-location"])
    spec = CredentialSpec.from_settings(settings)
    token = read_token_file(container_token_file) if container_token_file else generate_token()
    if port_file is not None:
        _check_port_file(port_file)
    tls = tls_context(tls_cert, tls_key) if tls_cert is not None else None

    holder: list[RefreshingCredentials] = []
    # Signals, sd_notify and the stderr log from here on. A SIGTERM while logging in or
    # fetching the first credentials: finish that step (it is bounded), then stop cleanly
    # instead of serving.
    life = _life(debug, holder).__enter__()
    try:
        session = CredentialSession(spec, secret_policy=SecretPolicy.terminal(remember=True),
                                    pkcs8_password=settings["pkcs8-password"],
                                    tpm_key_password=settings["tpm-key-password"], rotate=True)
        metrics = _observe(session, settings)
        app = ServeApp(_Deferred(holder), role_name=role_name_of(spec.role_arn), imds=loopback and not no_imds,
                       container_token=token, metrics=metrics)
        server = HttpServer(app, host=host, port=port, tls=tls, hop_limit=hop_limit,
                            access_log=access_logger(sys.stderr))
        try:
            server.bind()  # before the PIN: a busy port must not cost a login
        except OSError as exc:
            raise UsageError(f"cannot listen on {_base_url('tcp', host, port)[6:]}: "
                             f"{exc.strerror or exc}") from None
    except BaseException:
        life.__exit__(None, None, None)
        raise

    credentials = RefreshingCredentials(session.fetch, on_refresh=_log_refresh)
    try:
        session.open()  # log in now, in the main thread (a prompt happens here or never)
        first = credentials.refresh()  # errors reach the person with their exit code
        holder.append(credentials)
        credentials.start()

        async def run() -> None:
            await server.start()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            life.on_stop(lambda: loop.call_soon_threadsafe(stop.set))
            if life.wakeup_fd is not None:  # a signal taken by another thread wakes the loop
                loop.add_reader(life.wakeup_fd, life.drain)
            if port_file is not None:
                try:
                    write_atomic(port_file, f"{server.port}\n")
                except OSError as exc:
                    raise UsageError(f"cannot write --port-file {redact(str(port_file))}: "
                                     f"{exc.strerror or exc}") from None
            _announce(server, host, "https" if tls else "http", app.imds is not None, token, container_token_file,
                      format_expiration(first.expiration))
            if credentials.wait_ready(0) and not life.stop.is_set():  # the first credentials are held
                life.ready(f"serving on {_base_url('https' if tls else 'http', host, server.port)}")
            await stop.wait()
            await server.close()

        asyncio.run(run())
    finally:
        server.stop()
        credentials.close()
        session.close()
        if port_file is not None:
            port_file.unlink(missing_ok=True)
        life.__exit__(None, None, None)
    print("rolesanywhere-hsm serve stopped", file=sys.stderr, flush=True)


def _observe(session: CredentialSession, settings: Settings) -> Metrics:
    """The metrics (always counted; rendered only when /metrics is asked) and, with
    --audit-log, the audit log, as observers of the session. Shared with `update`."""
    from rolesanywhere_hsm.metrics import Metrics

    metrics = Metrics(settings.command, logins=lambda: session.login_count)
    session.observers.append(metrics)
    if settings["audit-log"]:
        from rolesanywhere_hsm.audit import AuditLog

        session.observers.append(AuditLog(settings["audit-log"]))
    return metrics


class _Deferred:
    """`current()` of the refreshing credentials once they exist (the app is built before the
    first fetch so that the port is bound before any PIN is asked)."""

    def __init__(self, holder: list[RefreshingCredentials]) -> None:
        self._holder = holder

    def current(self) -> Credentials:
        if not self._holder:
            from rolesanywhere_hsm.errors import CredentialsUnavailableError

            raise CredentialsUnavailableError("no credentials fetched yet")
        return self._holder[0].current()


def _life(debug: bool, holder: list[RefreshingCredentials]) -> LongRunning:
    """Signals, sd_notify and the stderr log: refresh failures and recoveries are worth a line
    (`--debug` has already set up a handler for everything); SIGUSR1 logs the refresh state."""
    from rolesanywhere_hsm.cli.longrun import LongRunning, refresh_state

    return LongRunning("serve", prefix="serve: ", debug=debug,
                       loggers=("rolesanywhere_hsm.refresh", "rolesanywhere_hsm.servers",
                                "rolesanywhere_hsm.httpserver", "rolesanywhere_hsm.session"),
                       state=lambda: refresh_state(holder[0] if holder else None))


def _log_refresh(credentials: Credentials) -> None:
    import logging

    from rolesanywhere_hsm.credentials import format_expiration

    logging.getLogger("rolesanywhere_hsm.servers").info(
        "new credentials, valid until %s", format_expiration(credentials.expiration))


def register(app: typer.Typer) -> None:
    app.command("serve")(table_command("serve", serve, extra=[
        extra_option("port", int, DEFAULT_PORT, "--port", metavar="PORT", min=0, max=65535,
                     help="Port to listen on (0 picks a free one; see --port-file)."),
        extra_option("address", str, "127.0.0.1", "--address", metavar="IP",
                     help="Address to listen on; a non-loopback one needs --allow-non-loopback."),
        extra_option("allow_non_loopback", bool, False, "--allow-non-loopback",
                     help="Allow a non-loopback --address: IMDS is then off and only the "
                     "container endpoint (token required) answers."),
        extra_option("no_imds", bool, False, "--no-imds",
                     help="Serve only the token-protected container endpoint, also on loopback."),
        extra_option("hop_limit", int, DEFAULT_HOP_LIMIT, "--hop-limit", metavar="N", min=1, max=255,
                     help="IP TTL / hop limit of the answers (1..255), so that they do not travel "
                     "further than meant."),
        extra_option("container_token_file", Optional[Path], None, "--container-token-file",  # noqa: UP045
                     metavar="FILE", help="Read the container endpoint's token from this file "
                     "(else one is generated at start and printed with the export lines)."),
        extra_option("tls_cert", Optional[Path], None, "--tls-cert", metavar="FILE",  # noqa: UP045
                     help="Serve HTTPS with this certificate (PEM): SDKs accept a non-loopback "
                     "container endpoint only over HTTPS."),
        extra_option("tls_key", Optional[Path], None, "--tls-key", metavar="FILE",  # noqa: UP045
                     help="Private key of --tls-cert (PEM, unencrypted), if not in the same file."),
        extra_option("port_file", Optional[Path], None, "--port-file", metavar="FILE",  # noqa: UP045
                     help="Write the port here (atomically) once serving."),
    ]))
