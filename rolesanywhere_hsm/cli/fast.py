"""The fast path of the commands SDKs run: option table in, credentials out, nothing heavy first.

`run_fast()` parses argv with the option table's own parser and merges environment and profile
(`settings_for`). With `--cache` it first looks for a hit under the key computed from those
settings (rolesanywhere_hsm.cachekey says why a hit needs no validation: only a validated source
ever stored an entry), reading the entry without json or datetime (CredentialCache.hit_output);
anything else validates the credential source (`CredentialSpec`, errors reported as they always
were) and goes through the cache as before. Only a miss imports the session layer, httpx, the
signers and the PKCS#11 module (and httpx only if a proxy applies).
The typer command of the same name calls `credential_process()` below with the same settings,
so `--help` and the fast path cannot drift apart (a parity test feeds both the same argv).
"""

from __future__ import annotations

import sys

from rolesanywhere_hsm.settings import Settings, parse_args, settings_for

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a cache hit
if TYPE_CHECKING:
    from typing import Any

    from rolesanywhere_hsm.credentials import Credentials
    from rolesanywhere_hsm.spec import CredentialSpec

__all__ = ["cache_description", "credential_process", "import_http_client", "run_fast"]

# Imported by httpx and httpcore when installed, and never used by one synchronous request:
# httpx's command-line tool (httpx._main pulls click, rich and pygments: about 45 ms),
# httpcore's async back ends (trio about 60 ms, anyio about 10), HTTP/2 (h2: the client never
# asks for it) and the brotli and zstandard decoders (we ask for `identity` and refuse any other
# encoding before decoding). Where they are not installed, holding them back still spares a
# search of every path entry each. (socksio stays: a SOCKS proxy in the environment needs it.)
# docs/performance.md.
UNUSED_BY_ONE_REQUEST = ("httpx._main", "trio", "anyio", "h2", "brotli", "brotlicffi", "zstandard")
_own_process = False  # set by run_fast: the process is ours (no caller's code shares it)


def run_fast(command: str, argv: list[str], *, own_process: bool = False) -> None:
    """Run `command` (one of cli.FAST_COMMANDS) from its argv, without typer.

    `own_process`: the command is the whole process (the console script), so the HTTP client
    may be imported without the modules in UNUSED_BY_ONE_REQUEST."""
    global _own_process
    _own_process = own_process
    flags = parse_args(command, argv)
    if flags is None:  # --help: typer's help is the documented one
        from rolesanywhere_hsm.cli.typer_app import app

        app(args=[command, *argv], prog_name="rolesanywhere-hsm")
        return
    credential_process(settings_for(command, flags))


def import_http_client(held_back: tuple[str, ...] = UNUSED_BY_ONE_REQUEST) -> None:
    """Import the httpx path (rolesanywhere_hsm.httpxpath, and so httpx) without UNUSED_BY_ONE_REQUEST.

    Called by the client only when it sends through httpx (a proxy applies): a direct call
    loads no httpx at all. Each held-back module gets a None in sys.modules while httpx and
    httpcore load: both import them inside `try: ... except ImportError`, and carry on without
    (httpx's `main` then says the CLI extra is missing; httpcore's async locks are never made in
    a synchronous client). The placeholders are removed afterwards, so that the names import
    normally later. Only for a process that is ours alone: a program of the user's may need
    httpx's async support. Should a future httpx need one of them after all, the import is done
    again with nothing held back.
    """
    modules = sys.modules
    if "rolesanywhere_hsm.httpxpath" in modules:
        return
    held = [name for name in held_back if name not in modules]
    for name in held:
        modules[name] = None
    try:
        import rolesanywhere_hsm.httpxpath  # noqa: F401
    except ImportError as exc:
        if exc.name not in held:
            raise
        _release(modules, held)
        for name in [m for m in modules if m.split(".")[0] in ("httpx", "httpcore")
                     or m == "rolesanywhere_hsm.httpxpath"]:
            del modules[name]  # loaded halfway: load again, whole
        import rolesanywhere_hsm.httpxpath  # noqa: F401, F811
    finally:
        _release(modules, held)


def _release(modules: dict[str, Any], held: list[str]) -> None:
    for name in held:
        if name in modules and modules[name] is None:
            del modules[name]


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


def cache_description(spec: CredentialSpec) -> str:
    """What `cache list` shows for an entry: the role and the certificate (a URI without its
    PIN attributes), or the selector when the certificate is chosen by --cert-selector."""
    from rolesanywhere_hsm.redact import redact, without_pin_attributes

    if spec.certificate is not None:
        source = without_pin_attributes(spec.certificate)
    elif spec.cert_selector is not None:
        source = f"the certificate selected by {spec.cert_selector}"
    else:
        source = "no certificate"
    return redact(f"{spec.role_arn} with {source}")


def _cache_hit(settings: Settings) -> str | None:
    """What a cache hit prints, from the settings alone; None: validate and go the usual way."""
    from rolesanywhere_hsm.cache import CredentialCache
    from rolesanywhere_hsm.cachekey import hit_key

    key = hit_key(settings)
    return None if key is None else CredentialCache().hit_output(key)


def credential_process(settings: Settings) -> None:
    """Print temporary credentials as the JSON that AWS `credential_process` reads.

    Stdout gets exactly one JSON object on success and nothing on failure: the SDK that runs us
    parses it; everything for people goes to stderr.
    """
    from rolesanywhere_hsm.cli.compat import check_store_flags

    configure_logging(settings["debug"])
    check_store_flags(settings["system-store-name"], settings["system-store-location"])
    # An audit log is opened (and a bad path reported) at start, hit or not: those runs go the
    # usual way, where that happens before the cache is looked at.
    if settings["cache"] and not settings["audit-log"]:
        output = _cache_hit(settings)
        if output is not None:
            sys.stdout.write(output + "\n")
            sys.stdout.flush()
            return
    from rolesanywhere_hsm.spec import CredentialSpec  # validation: re, the ARN rules

    spec = CredentialSpec.from_settings(settings)
    observers: list[Any] = []
    if settings["audit-log"]:  # only then is the audit module imported
        from rolesanywhere_hsm.audit import AuditLog

        observers.append(AuditLog(settings["audit-log"]))

    def fetch() -> Credentials:
        if _own_process:  # httpx, should a proxy need it, is loaded without what it never uses
            from rolesanywhere_hsm import client

            client.load_httpx_path = import_http_client
        from rolesanywhere_hsm.session import CredentialSession
        from rolesanywhere_hsm.signers.secretpolicy import SecretPolicy

        # The command line prompts on the terminal (main thread) when no source answers.
        with CredentialSession(spec, pkcs8_password=settings["pkcs8-password"],
                               tpm_key_password=settings["tpm-key-password"],
                               observers=observers, secret_policy=SecretPolicy.terminal()) as session:
            return session.fetch()

    if settings["cache"]:
        from rolesanywhere_hsm.cache import CredentialCache

        credentials = CredentialCache().get_or_fetch(  # the description only on a miss
            spec.cache_key(), fetch, description=lambda: cache_description(spec))
    else:
        credentials = fetch()
    sys.stdout.write(credentials.credential_process_json() + "\n")
    sys.stdout.flush()
