"""Which PKCS#11 module to load, and the one owner of python-pkcs11's per-path library cache.

python-pkcs11 keeps one `lib` per path (trap 1 in docs/tokens.md) and modules read their
configuration (SOFTHSM2_CONF, TPM2_PKCS11_*) only at C_Initialize. Everything in the project
that loads or finalises a module goes through `acquire_module` / `release_module` (signers,
the inventory) or `finalize_module` (tests and the SoftHSM builder), so that the first user
initialises, the last one finalises, and a changed environment is read by the next user.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

from rolesanywhere_hsm.errors import ModuleLoadError
from rolesanywhere_hsm.signers.pkcs11_uri import Pkcs11Uri

__all__ = [
    "DEFAULT_MODULE",
    "KNOWN_MODULES",
    "MODULE_DIRS",
    "MODULE_ENV_VAR",
    "acquire_module",
    "captured_stderr",
    "module_noise_contained",
    "finalize_module",
    "find_module_by_name",
    "known_module_paths",
    "loaded_module",
    "module_in_use",
    "release_module",
    "resolve_module_path",
]

MODULE_ENV_VAR = "RAH_PKCS11_MODULE"
# The official aws_signing_helper loads this module when --pkcs11-lib is not given.
DEFAULT_MODULE = "p11-kit-proxy.so"
# Where a bare module name (module-name=, --pkcs11-lib NAME) is looked for, in order.
MODULE_DIRS = (
    "/usr/lib/x86_64-linux-gnu/pkcs11",
    "/usr/lib/aarch64-linux-gnu/pkcs11",
    "/usr/lib64/pkcs11",
    "/usr/lib/pkcs11",
    "/usr/local/lib/pkcs11",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
    "/usr/lib/softhsm",
    "/opt/homebrew/lib",
    "/opt/homebrew/lib/pkcs11",
)

# The usual modules `tokens` looks for (file names; searched in MODULE_DIRS) and the HSM
# clients that install into their own directories (full paths).
KNOWN_MODULES = (
    "libykcs11.so",
    "opensc-pkcs11.so",
    "libtpm2_pkcs11.so",
    "libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/opt/cloudhsm/lib/libcloudhsm_pkcs11.so",
    "/opt/safenet/lunaclient/lib/libCryptoki2_64.so",
    "/usr/safenet/lunaclient/lib/libCryptoki2_64.so",
    "/opt/nfast/toolkits/pkcs11/libcknfast.so",
    "/usr/lib/libcs_pkcs11_R3.so",  # Utimaco
    "/usr/local/lib/libyubihsm_pkcs11.so",
    "yubihsm_pkcs11.so",
    "libnitrokey-pkcs11.so",
)


def resolve_module_path(
    uris: tuple[Pkcs11Uri | None, ...], configured: str | None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The module to load: URI module-path, URI module-name, --pkcs11-lib, $RAH_PKCS11_MODULE,
    then p11-kit-proxy.so (what the official helper loads). Names without a '/' are looked up
    in MODULE_DIRS, with and without 'lib' and '.so' (RFC 7512 section 2.3 module-name)."""
    environ = os.environ if environ is None else environ
    for uri in uris:
        if uri is not None and uri.module_path:
            return _existing_module(uri.module_path, "module-path in the pkcs11: URI")
    for uri in uris:
        if uri is not None and uri.module_name:
            return _find_module_by_name(uri.module_name, "module-name in the pkcs11: URI")
    # The option table reads RAH_PKCS11_MODULE into `configured` too: a value equal to the
    # variable's came from it (a typo there must not be blamed on a flag nobody typed).
    from_env = bool(configured) and configured == environ.get(MODULE_ENV_VAR)
    for value, where in ((configured, MODULE_ENV_VAR if from_env else "--pkcs11-lib"),
                         (environ.get(MODULE_ENV_VAR), MODULE_ENV_VAR)):
        if value:
            if "/" in value:
                return _existing_module(value, where)
            return _find_module_by_name(value, where)
    return _find_module_by_name(DEFAULT_MODULE, "the default module")


def _existing_module(path: str, where: str) -> str:
    if not os.path.isfile(path):
        raise ModuleLoadError(
            f"The PKCS#11 module {path} (from {where}) does not exist.",
            hint="Check the path; `rolesanywhere-hsm tokens` lists the modules installed here.",
        )
    return os.path.abspath(path)


def _name_candidates(name: str) -> list[str]:
    base = name[:-3] if name.endswith(".so") else name
    return [name, base + ".so", "lib" + base + ".so"]


def find_module_by_name(name: str) -> str | None:
    """The first file `name` names in MODULE_DIRS, or None: in each directory, the exact file
    name (or lib<name>.so, <name>.so) first, then any file RFC 7512's module-name matches
    (the name without prefix and suffix, compared case-insensitively: `SoftHSM2` names
    libsofthsm2.so; pkcs11_uri.module_name_matches)."""
    from rolesanywhere_hsm.signers.pkcs11_uri import module_name_matches

    for directory in MODULE_DIRS:
        for candidate in _name_candidates(name):
            path = os.path.join(directory, candidate)
            if os.path.isfile(path):
                return path
        with contextlib.suppress(OSError):
            for entry in sorted(os.listdir(directory)):
                path = os.path.join(directory, entry)
                if module_name_matches(name, entry) and os.path.isfile(path):
                    return path
    return None


def _find_module_by_name(name: str, where: str) -> str:
    found = find_module_by_name(name) if "/" not in name else (name if os.path.isfile(name) else None)
    if found is not None:
        return found
    raise ModuleLoadError(
        f"The PKCS#11 module {name!r} (from {where}) was not found in the standard directories.",
        hint="Give its full path with --pkcs11-lib, module-path= in the URI, or "
        f"{MODULE_ENV_VAR}.",
    )


def _p11kit_registered_modules(environ: Mapping[str, str]) -> list[str]:
    """Module paths named by p11-kit's `*.module` files (system config, then the user's),
    leaving out trust-policy modules (p11-kit-trust: the system's CA store, no keys)."""
    home = environ.get("HOME", "")
    config_home = environ.get("XDG_CONFIG_HOME") or (os.path.join(home, ".config") if home else "")
    directories = ["/usr/share/p11-kit/modules", "/etc/pkcs11/modules"]
    if config_home:
        directories.append(os.path.join(config_home, "pkcs11", "modules"))
    found: list[str] = []
    for directory in directories:
        with contextlib.suppress(OSError):
            for entry in sorted(os.listdir(directory)):
                if not entry.endswith(".module"):
                    continue
                settings: dict[str, str] = {}
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    with open(os.path.join(directory, entry), encoding="utf-8") as handle:
                        for line in handle:
                            key, _, value = line.partition(":")
                            settings[key.strip()] = value.strip()
                if settings.get("module") and settings.get("trust-policy") != "yes":
                    found.append(settings["module"])
    return found


def known_module_paths(configured: str | None = None,
                       environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """Every module file `tokens` should look at, as (absolute path, why it is listed), once
    each, the named ones first: --pkcs11-lib, RAH_PKCS11_MODULE, p11-kit's registered modules,
    then the usual paths of ykcs11, OpenSC, tpm2-pkcs11, SoftHSM2 and HSM clients."""
    environ = os.environ if environ is None else environ
    wanted: list[tuple[str, str]] = []
    if configured:
        wanted.append((configured, "--pkcs11-lib"))
    if environ.get(MODULE_ENV_VAR):
        wanted.append((environ[MODULE_ENV_VAR], MODULE_ENV_VAR))
    wanted += [(m, "registered with p11-kit") for m in _p11kit_registered_modules(environ)]
    wanted += [(m, "usual path") for m in KNOWN_MODULES]
    result: dict[str, str] = {}
    for name, why in wanted:
        path = name if "/" in name else find_module_by_name(name)
        if path is None and "/" not in name and why != "usual path":
            raise ModuleLoadError(f"The PKCS#11 module {name!r} (from {why}) was not found.",
                                  hint="Give its full path.")
        if path is None or not os.path.isfile(path):
            if why in ("--pkcs11-lib", MODULE_ENV_VAR):
                raise ModuleLoadError(f"The PKCS#11 module {name} (from {why}) does not exist.",
                                      hint="Check the path.")
            continue
        real = os.path.realpath(path)
        if real not in {os.path.realpath(p) for p in result}:
            result[os.path.abspath(path)] = why
    return list(result.items())


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Send file descriptor 2 to a temporary file for the duration, and hand back what was
    written there (as lines, in the yielded list, once the block ends). For C_Initialize and
    slot listing of modules the user did not name: tpm2-pkcs11 on a machine without a TPM
    prints several lines of ERROR that say nothing about the user's token.

    The file is an anonymous memory file where the system has them (Linux): no `tempfile`,
    which with `shutil` and the compressors it loads costs a cold run more than the capture."""
    captured: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with _anonymous_file() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read(64 * 1024).decode("utf-8", "replace")
            captured.extend(line for line in text.splitlines() if line.strip())


def _anonymous_file() -> BinaryIO:
    if hasattr(os, "memfd_create"):
        with contextlib.suppress(OSError):  # a kernel or sandbox without memfd_create
            return open(os.memfd_create("rolesanywhere-hsm-stderr", os.MFD_CLOEXEC), "w+b")
    import tempfile

    return tempfile.TemporaryFile()


@contextlib.contextmanager
def module_noise_contained(path: str) -> Iterator[None]:
    """`captured_stderr` around a signer's loading, C_Initialize and token listing: what a
    module prints there (p11-kit-proxy loads every registered module, and tpm2-pkcs11 without
    a TPM prints over a dozen ERROR lines) would reach the SDK that runs credential-process,
    before our one-line error. The lines go to the debug log instead. With debug logging on
    (--debug) nothing is captured: the module's own lines appear where it prints them, as
    `tokens` and `doctor` do."""
    from rolesanywhere_hsm.lazylog import get_logger

    log = get_logger("rolesanywhere_hsm.pkcs11")
    # Without `logging` loaded nothing can have turned debug logging on (lazylog).
    if "logging" in sys.modules and log.isEnabledFor(10):  # 10: logging.DEBUG
        yield
        return
    noise: list[str] = []
    try:
        with captured_stderr() as noise:
            yield
    finally:
        for line in noise[:50]:
            log.debug("module %s printed: %s", path, line)


# ---------------------------------------------------------------------------------------------
# Lifetime

_modules_lock = threading.Lock()
_module_users: dict[str, int] = {}
# Path -> how many times it was loaded and initialised (a first user after none): a test-only
# window on "the module is loaded once", not in __all__.
_initialisations: dict[str, int] = {}


def acquire_module(path: str) -> Any:
    """Load and C_Initialize `path` for one more user; pair every call with `release_module`.
    The first user initialises and the last one finalises: a process that opens a signer,
    closes it and opens another picks up a changed environment."""
    import pkcs11
    from pkcs11 import exceptions as p11

    with _modules_lock:
        try:
            lib = pkcs11.lib(path)  # loads once per path, C_Initializes when not initialised
        except p11.PKCS11Error as exc:
            detail = str(exc) if type(exc) is p11.PKCS11Error else type(exc).__name__
            hint = "Check that it is a PKCS#11 module for this machine and its configuration."
            if "softhsm" in path.lower():
                hint = "Check SOFTHSM2_CONF and the token directory it names."
            raise ModuleLoadError(
                f"The PKCS#11 module {path} cannot be loaded or initialised ({detail}).", hint=hint,
            ) from None
        if not _module_users.get(path):
            _initialisations[path] = _initialisations.get(path, 0) + 1
        _module_users[path] = _module_users.get(path, 0) + 1
        return lib


def release_module(path: str) -> None:
    """One user fewer; the last one C_Finalizes (which also closes any session a failed login
    leaked, trap 2)."""
    with _modules_lock:
        count = _module_users.get(path, 0) - 1
        if count > 0:
            _module_users[path] = count
            return
        _module_users.pop(path, None)
        _finalize_loaded(path)


@contextlib.contextmanager
def loaded_module(path: str) -> Iterator[Any]:
    """`acquire_module` / `release_module` as a context manager (listings, the inventory)."""
    lib = acquire_module(path)
    try:
        yield lib
    finally:
        release_module(path)


def _finalize_loaded(path: str) -> None:
    pkcs11 = sys.modules.get("pkcs11")
    if pkcs11 is None:
        return
    # python-pkcs11 exposes its per-path cache only as `_loaded`; this module is its one reader.
    loaded = getattr(pkcs11, "_loaded", {}).get(path)
    if loaded is not None and loaded.initialized:
        with contextlib.suppress(pkcs11.PKCS11Error):
            loaded.finalize()


def finalize_module(path: str) -> None:
    """C_Finalize `path` if this process has it loaded and initialised; never loads it.
    For test fixtures at teardown (the environment a module was initialised with may be
    gone) and for builders that must make the next C_Initialize read a new configuration.
    A signer still open on it loses its session: call this only when none is."""
    with _modules_lock:
        _finalize_loaded(path)


def forget_module(path: str) -> None:
    """Tests only (softhsm.reset_softhsm_in_process), so not in `__all__`: drop every
    registration and finalise, even if a test forgot to close a signer."""
    with _modules_lock:
        _module_users.pop(path, None)
        _finalize_loaded(path)


def module_in_use(path: str) -> bool:
    """Whether an open signer holds `path` initialised (the SoftHSM builder checks this)."""
    with _modules_lock:
        return _module_users.get(path, 0) > 0


def initialisation_count(path: str) -> int:
    """How many times `path` was loaded and initialised in this process (test-only)."""
    with _modules_lock:
        return _initialisations.get(path, 0)
