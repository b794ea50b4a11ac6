"""One table of options, and where each value came from.

Every option that a credential command takes is written once, in `OPTIONS`: its name (the long
flag without `--`, and the key in a named profile), its type, its default, its environment
variable and its help. The typer commands, the fast parser of `credential-process`, the profile
loader and `--help` are all built from this table, so they cannot drift apart.

A value is taken from the first place that has it: the command line, then the environment, then
the named profile (`[profiles.NAME]` in a TOML file), then the default; `Settings` remembers
where each value came from, so that an error (or `doctor`) can say "session-duration 100, set in
profile 'dev' of ~/.config/rolesanywhere-hsm/config.toml" the way the user gave it.

This module is pure apart from reading the profile file, and imports nothing heavy: the fast
path of `credential-process` runs it before anything else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from rolesanywhere_hsm.errors import UsageError
from rolesanywhere_hsm.record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a cache hit
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from pathlib import Path
    from typing import Any

__all__ = [
    "CREDENTIAL_COMMANDS",
    "CommandLineError",
    "ConfigError",
    "OPTIONS",
    "Option",
    "Profile",
    "Settings",
    "check_profile_values",
    "config_path",
    "load_profile",
    "option",
    "options_for",
    "parse_args",
    "resolve",
    "settings_for",
]

CREDENTIAL_COMMANDS = frozenset({"credential-process", "serve", "update", "sign-string", "doctor"})
_KEY_COMMANDS = CREDENTIAL_COMMANDS | {"read-certificate-data"}
_SESSION_COMMANDS = frozenset({"credential-process", "serve", "update"})
# Options about the call to Roles Anywhere: sign-string signs locally and takes none of them.
_NETWORK_COMMANDS = CREDENTIAL_COMMANDS - {"sign-string"}
# read-certificate-data's certificate choice, shared with the commands that sign.
_SELECT_COMMANDS = CREDENTIAL_COMMANDS | {"read-certificate-data"}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
MAX_CONFIG_BYTES = 1 << 20


class ConfigError(UsageError):
    """A setting that cannot be used: a bad value, an unknown key, a missing profile (exit 2)."""

    code = "RAH-CFG-001"


class CommandLineError(ConfigError):
    """The command line itself does not parse. Like click's usage errors, it is shown without a
    traceback even with --debug: the traceback would only show our parser."""

    code = "RAH-USE-002"


class Option(Record):
    """One option: `--name` on the command line, `name` in a profile, `env` in the environment.
    (A plain frozen class, not a dataclass: rolesanywhere_hsm.record says why.)"""

    _compared = ("name", "type", "help", "default", "env", "commands", "in_profile", "secret",
                 "metavar", "required_by", "required_unless", "negation")
    __slots__ = _compared

    name: str
    type: type
    help: str
    default: Any
    env: str | None
    commands: frozenset[str]
    in_profile: bool  # False for options that choose the profile or only make sense once
    secret: bool  # a password: allowed for compatibility, never shown back
    metavar: str | None
    required_by: frozenset[str]  # commands that cannot run without it
    required_unless: str | None  # ...unless this other option is given
    # A switch's "off" flag (without `--`), so that a switch a profile or the environment
    # turns on can be turned off for one run: `--no-cache` against `cache = true`.
    negation: str | None

    def __init__(self, name: str, type: type, help: str, default: Any = None, env: str | None = None,
                 commands: frozenset[str] = CREDENTIAL_COMMANDS, in_profile: bool = True,
                 secret: bool = False, metavar: str | None = None,
                 required_by: frozenset[str] = frozenset(), required_unless: str | None = None,
                 negation: str | None = None) -> None:
        self._set(name=name, type=type, help=help, default=default, env=env, commands=commands,
                  in_profile=in_profile, secret=secret, metavar=metavar, required_by=required_by,
                  required_unless=required_unless, negation=negation)

    @property
    def attr(self) -> str:
        """The Python name (keyword argument, dataclass field)."""
        return self.name.replace("-", "_")

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def is_flag(self) -> bool:
        """A switch: present means True, and it takes no value on the command line."""
        return self.type is bool

    @property
    def negation_flag(self) -> str | None:
        """`--no-cache` for `cache`: present means False (None: the switch has no negation)."""
        return None if self.negation is None else f"--{self.negation}"


def _options() -> tuple[Option, ...]:
    o = Option
    return (
        o("certificate", str, "Leaf certificate: a PEM/DER file, a PKCS#12 file, or a pkcs11: URI.",
          env="RAH_CERTIFICATE", commands=_KEY_COMMANDS, metavar="FILE|URI",
          required_by=_SESSION_COMMANDS | {"read-certificate-data", "doctor"},
          required_unless="cert-selector"),
        o("private-key", str, "Private key: a PEM/DER/PKCS#12 file or a pkcs11: URI. With a "
          "pkcs11: certificate it may be left out: the key with the certificate's CKA_ID is used.",
          env="RAH_PRIVATE_KEY", metavar="FILE|URI"),
        o("intermediates", str, "PEM bundle of intermediate CA certificates.",
          env="RAH_INTERMEDIATES", metavar="FILE", commands=_NETWORK_COMMANDS),
        o("trust-anchor-arn", str, "Trust anchor ARN.", env="RAH_TRUST_ANCHOR_ARN", metavar="ARN",
          required_by=_SESSION_COMMANDS | {"doctor"}, commands=_NETWORK_COMMANDS),
        o("profile-arn", str, "Profile ARN.", env="RAH_PROFILE_ARN", metavar="ARN",
          required_by=_SESSION_COMMANDS | {"doctor"}, commands=_NETWORK_COMMANDS),
        o("role-arn", str, "Role ARN to assume.", env="RAH_ROLE_ARN", metavar="ARN",
          required_by=_SESSION_COMMANDS | {"doctor"}, commands=_NETWORK_COMMANDS),
        o("region", str, "Signing region; must match the trust anchor's (the default).",
          env="RAH_REGION", metavar="REGION", commands=_NETWORK_COMMANDS),
        o("endpoint", str, "Endpoint URL; else AWS_ENDPOINT_URL_ROLESANYWHERE, AWS_ENDPOINT_URL, "
          "the regional one.", env="RAH_ENDPOINT", metavar="URL", commands=_NETWORK_COMMANDS),
        o("session-duration", int, "Requested session length in seconds (900..43200).",
          default=3600, env="RAH_SESSION_DURATION", metavar="SECONDS", commands=_NETWORK_COMMANDS),
        o("role-session-name", str, "Role session name (the profile must accept it).",
          env="RAH_ROLE_SESSION_NAME", metavar="NAME", commands=_NETWORK_COMMANDS),
        o("no-verify-ssl", bool, "Do not verify the endpoint's TLS certificate.", default=False,
          commands=_NETWORK_COMMANDS, negation="verify-ssl"),
        o("ca-bundle", str, "CA bundle to verify the endpoint with.", env="AWS_CA_BUNDLE",
          metavar="FILE", commands=_NETWORK_COMMANDS),
        o("with-proxy", bool, "Accepted for compatibility: proxies from HTTPS_PROXY/NO_PROXY are "
          "always honoured.", default=False, commands=_NETWORK_COMMANDS),
        o("no-proxy", bool, "Ignore HTTPS_PROXY and the other proxy variables.", default=False,
          commands=_NETWORK_COMMANDS, negation="use-proxy"),
        o("timeout", float, "Total time for getting credentials, all attempts included.",
          default=20.0, env="RAH_TIMEOUT", metavar="SECONDS", commands=_NETWORK_COMMANDS),
        o("pkcs8-password", str, "Password of an encrypted key file (prefer RAH_PKCS8_PASSWORD or "
          "the prompt: argv is visible to other users).", env="RAH_PKCS8_PASSWORD",
          in_profile=False, secret=True, metavar="PASSWORD"),
        o("pkcs11-lib", str, "PKCS#11 module when the URI has no module-path.",
          env="RAH_PKCS11_MODULE", commands=_KEY_COMMANDS, metavar="PATH"),
        o("reuse-pin", bool, "Use the user PIN again for keys that need a PIN before every "
          "signature.", default=False, env="RAH_REUSE_PIN", negation="no-reuse-pin"),
        o("tpm-key-password", str, "Password of a TPM key file (TSS2 PEM) (prefer "
          "RAH_TPM_KEY_PASSWORD, which the TPM signer reads itself, or the prompt: argv is visible "
          "to other users).", in_profile=False, secret=True, metavar="PASSWORD"),
        o("no-tpm-key-password", bool, "The TPM key file's key has no password: do not ask for one.",
          default=False, negation="tpm-key-has-password"),
        o("cert-selector", str, "Pick the certificate: Key=x509Subject|x509Issuer|x509Serial,"
          "Value=... pairs, or file://selector.json (the official helper's syntax).",
          commands=_KEY_COMMANDS, metavar="SELECTOR"),
        o("use-latest-expiring-certificate", bool, "When --cert-selector matches several "
          "certificates, use the one that expires last.", default=False, commands=_SELECT_COMMANDS,
          negation="no-use-latest-expiring-certificate"),
        o("system-store-name", str, "Windows certificate store (the official helper's flag): "
          "accepted, ignored here.", commands=_KEY_COMMANDS, metavar="NAME"),
        o("system-store-location", str, "Windows certificate store location (the official "
          "helper's flag): accepted, ignored here.", metavar="LOCATION", commands=_SELECT_COMMANDS),
        o("no-token-chain", bool, "With a certificate on a token and no --intermediates, send no "
          "chain (by default the issuer path is built from the CA certificates on the same token).",
          default=False, env="RAH_NO_TOKEN_CHAIN", commands=_NETWORK_COMMANDS, negation="token-chain"),
        o("audit-log", str, "Append one JSON line per CreateSession attempt to FILE (0600, "
          "created if missing; - for stderr); never a secret. See docs/operations.md.",
          env="RAH_AUDIT_LOG", metavar="FILE", commands=_SESSION_COMMANDS),
        o("cache", bool, "Reuse credentials across runs from a per-user 0600 cache.",
          default=False, env="RAH_CACHE", commands=frozenset({"credential-process"}),
          negation="no-cache"),
        o("config", str, "The named-profiles file (default "
          "$XDG_CONFIG_HOME/rolesanywhere-hsm/config.toml).", env="RAH_CONFIG",
          commands=_KEY_COMMANDS, in_profile=False, metavar="FILE"),
        o("config-profile", str, "Take settings from [profiles.NAME] of the config file.",
          env="RAH_CONFIG_PROFILE", commands=_KEY_COMMANDS, in_profile=False, metavar="NAME"),
        o("debug", bool, "Log each step on stderr and show tracebacks. Never logs secrets.",
          default=False, env="RAH_DEBUG", commands=_KEY_COMMANDS, in_profile=False),
    )


OPTIONS: tuple[Option, ...] = _options()
_BY_NAME: dict[str, Option] = {opt.name: opt for opt in OPTIONS}


def option(name: str) -> Option:
    return _BY_NAME[name]


def options_for(command: str) -> tuple[Option, ...]:
    return tuple(opt for opt in OPTIONS if command in opt.commands)


# -- where values come from ---------------------------------------------------------------------

class Profile(Record):
    """One `[profiles.NAME]` table, as read from `path`."""

    _compared = ("name", "path", "values")
    __slots__ = _compared

    name: str
    path: Path
    values: Mapping[str, Any]

    def __init__(self, name: str, path: Path, values: Mapping[str, Any] | None = None) -> None:
        self._set(name=name, path=path, values={} if values is None else values)

    def where(self) -> str:
        return f"profile '{self.name}' of {self.path}"


class Settings(Record, Mapping[str, "Any"]):  # a string: typing is not imported at run time
    """Resolved values by option name, each with where it came from."""

    _compared = ("command", "data", "origins", "profile")
    __slots__ = _compared

    command: str
    data: Mapping[str, Any]
    origins: Mapping[str, str]  # name -> "flag", "env", "profile" or "default"
    profile: Profile | None

    def __init__(self, command: str, data: Mapping[str, Any], origins: Mapping[str, str],
                 profile: Profile | None = None) -> None:
        self._set(command=command, data=data, origins=origins, profile=profile)

    __eq__ = Record.__eq__
    __hash__ = None  # type: ignore[assignment]  # its mappings are not hashable

    def __getitem__(self, name: str) -> Any:
        return self.data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def spelled(self, name: str) -> str:
        """The option as the user gave it: `--name`, `ENV_VAR`, or `name in profile 'p' of F`."""
        opt = _BY_NAME[name]
        origin = self.origins.get(name, "default")
        if origin == "env" and opt.env:
            return opt.env
        if origin == "profile" and self.profile is not None:
            return f"{name} in {self.profile.where()}"
        return opt.flag

    def describe(self, name: str) -> str:
        """`session-duration 100 from RAH_SESSION_DURATION`: for doctor and --debug; a secret
        option's value is never shown."""
        opt = _BY_NAME[name]
        value = "<hidden>" if opt.secret and self.data.get(name) else self.data.get(name)
        origin = self.origins.get(name, "default")
        return f"{name} {value!r} from {'the default' if origin == 'default' else self.spelled(name)}"


def resolve(command: str, flags: Mapping[str, Any], environ: Mapping[str, str] | None = None,
            profile: Profile | None = None) -> Settings:
    """Merge the command line (`flags`: name -> value for the options given), the environment,
    the profile and the defaults, in that order of precedence."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for opt in options_for(command):
        if flags.get(opt.name) is not None:
            values[opt.name], origins[opt.name] = flags[opt.name], "flag"
        elif opt.env and environ.get(opt.env) not in (None, ""):
            values[opt.name] = _from_text(opt, environ[opt.env], where=opt.env)
            origins[opt.name] = "env"
        elif profile is not None and opt.name in profile.values:
            values[opt.name], origins[opt.name] = profile.values[opt.name], "profile"
        else:
            values[opt.name], origins[opt.name] = opt.default, "default"
    return Settings(command, values, origins, profile)


def _from_text(opt: Option, text: str, *, where: str, error: type[ConfigError] = ConfigError) -> Any:
    """A value from the environment or the command line (always text) in the option's type."""
    if opt.type is bool:
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise error(f"{where} must be 1 or 0 (true or false).",
                          hint=f"Set {where}=1 to turn {opt.flag} on, or unset it.")
    if opt.type in (int, float):
        try:
            return opt.type(text.strip())
        except ValueError:
            kind = "a whole number" if opt.type is int else "a number"
            raise error(f"{where} must be {kind}.",
                        hint=f"Give {where} {kind}; `rolesanywhere-hsm COMMAND --help` lists the options.") from None
    return text


# -- named profiles ---------------------------------------------------------------------------

def config_path(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """`--config`, else `RAH_CONFIG`, else `$XDG_CONFIG_HOME/rolesanywhere-hsm/config.toml`."""
    from pathlib import Path  # here: a run without a profile (a cache hit) needs no pathlib

    environ = os.environ if environ is None else environ
    if explicit:
        return Path(explicit).expanduser()
    if environ.get("RAH_CONFIG"):
        return Path(environ["RAH_CONFIG"]).expanduser()
    base = environ.get("XDG_CONFIG_HOME")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "rolesanywhere-hsm" / "config.toml"


_TYPE_NAMES = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}


def load_profile(path: Path, name: str) -> Profile:
    """Read `[profiles.NAME]` from a TOML file and check every key and type against the table.

    Each mistake is one line naming the file, the profile, the key and the fix (exit 2).
    """
    import tomllib

    from rolesanywhere_hsm.files import read_regular_file
    from rolesanywhere_hsm.redact import redact
    from rolesanywhere_hsm.tomltable import loads

    shown = redact(str(path))
    if not os.path.lexists(path):
        raise ConfigError(f"The config file {shown} does not exist, so profile '{name}' cannot "
                          "be read.", hint="Create it with `rolesanywhere-hsm configure`, or "
                          "point --config / RAH_CONFIG at it.")
    data = read_regular_file(path, what="config", limit=MAX_CONFIG_BYTES, error=ConfigError)
    try:
        document = loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"The config file {shown} is not UTF-8 text.",
                          hint="Save it as UTF-8.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"The config file {shown} is not valid TOML: {exc}.",
                          hint="Fix the line it names.") from None
    profiles = document.get("profiles")
    if not isinstance(profiles, dict) or not isinstance(profiles.get(name), dict):
        known = sorted(profiles) if isinstance(profiles, dict) else []
        raise ConfigError(
            f"The config file {shown} has no profile '{name}'"
            + (f" (it has: {', '.join(known)})." if known else " (it has no [profiles.*] table)."),
            hint=f"Add a [profiles.{name}] table, or choose another --config-profile.",
        )
    return Profile(name, path, check_profile_values(profiles[name], f"profile '{name}' of {shown}"))


def check_profile_values(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Profile keys and values checked against the table (what `load_profile` reads and what
    `configure` writes): each mistake one line naming `where`, the key and the fix."""
    allowed = {opt.name: opt for opt in OPTIONS if opt.in_profile}
    for key, value in values.items():
        opt = allowed.get(key)
        if opt is None:
            if key in _BY_NAME:
                raise ConfigError(f"{key} cannot be set in a profile ({where}).",
                                  hint=f"Give {_BY_NAME[key].flag} on the command line or set "
                                  f"{_BY_NAME[key].env or 'it'} instead.")
            import difflib

            close = difflib.get_close_matches(key.replace("_", "-"), allowed, n=1)
            raise ConfigError(f"Unknown key '{key}' in {where}.",
                              hint=f"Did you mean '{close[0]}'?" if close else
                              "See `rolesanywhere-hsm credential-process --help` for the names.")
        if not _has_type(value, opt.type):
            raise ConfigError(
                f"'{key}' in {where} must be {_TYPE_NAMES[opt.type]}, not {type(value).__name__}.",
                hint=f"Write {key} = {_example(opt)}.")
    return {key: float(v) if allowed[key].type is float else v for key, v in values.items()}


def _has_type(value: Any, wanted: type) -> bool:
    if wanted is bool:
        return isinstance(value, bool)
    if wanted is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if wanted is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, wanted)


def _example(opt: Option) -> str:
    if opt.type is bool:
        return "true"
    if opt.type in (int, float):
        return str(opt.default if opt.default is not None else 3600)
    return '"..."'


# -- the fast parser ----------------------------------------------------------------------------

def parse_args(command: str, argv: Iterable[str]) -> dict[str, Any] | None:
    """The command line of `command` as name -> value, for the options given.

    The fast front door of `credential-process` uses this instead of typer; a parity test holds
    it to typer's reading of the same argv. None means "let typer handle it" (`--help`).
    Errors never echo a value the user typed (it may be a PIN in the wrong place).
    """
    known = {opt.flag: opt for opt in options_for(command)}
    negations = {opt.negation_flag: opt for opt in options_for(command) if opt.negation_flag}
    given: dict[str, Any] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg in ("--help", "-h"):
            return None
        if not arg.startswith("--") or arg == "--":
            raise CommandLineError("Got unexpected extra arguments (not shown: one may be a secret).",
                             hint=f"{command} takes only options; see "
                             f"`rolesanywhere-hsm {command} --help`.")
        flag, has_value, value = arg.partition("=")
        if flag in negations:  # a switch turned off for this run, whatever profile or env say
            if has_value:
                raise CommandLineError(f"{flag} takes no value.", hint=f"Write {flag} alone.")
            given[negations[flag].name] = False
            continue
        opt = known.get(flag)
        if opt is None:
            import difflib
            import re

            # An option name is shown only when it looks like one: a PIN typed as `--1234`
            # or `--Secret` is not repeated (the same rule as cli/usage.py for typer's errors).
            shown = flag if re.fullmatch(r"--[a-z][a-z0-9-]{0,39}", flag) else "(not shown)"
            close = difflib.get_close_matches(flag, [*known, *negations], n=1) if shown != "(not shown)" else []
            raise CommandLineError(f"No such option: {shown}.",
                             hint=f"Did you mean {close[0]}?" if close else
                             f"See `rolesanywhere-hsm {command} --help`.")
        if opt.is_flag:
            if has_value:
                raise CommandLineError(f"{opt.flag} takes no value.", hint=f"Write {opt.flag} alone.")
            given[opt.name] = True
            continue
        if not has_value:
            if i >= len(args):
                raise CommandLineError(f"{opt.flag} needs a value.", hint=f"Write {opt.flag} VALUE.")
            value = args[i]
            i += 1
        given[opt.name] = _from_text(opt, value, where=opt.flag, error=CommandLineError) if opt.type is not str else value
    return given


def settings_for(command: str, flags: Mapping[str, Any],
                 environ: Mapping[str, str] | None = None) -> Settings:
    """Everything a command runs with: the profile named by `--config-profile` (or
    `RAH_CONFIG_PROFILE`) loaded and checked, the values merged, the required ones present."""
    environ = os.environ if environ is None else environ
    profile_name = flags.get("config-profile") or environ.get("RAH_CONFIG_PROFILE")
    profile = None
    if profile_name:
        path = config_path(flags.get("config"), environ)
        profile = load_profile(path, profile_name)
    settings = resolve(command, flags, environ, profile)
    for opt in options_for(command):
        if command in opt.required_by and settings[opt.name] in (None, "") and not (
                opt.required_unless and settings[opt.required_unless] not in (None, "", False)):
            places = [opt.flag] + ([opt.env] if opt.env else []) + (
                [f"{opt.name} in a profile"] if opt.in_profile else [])
            alternative = f" (or --{opt.required_unless})" if opt.required_unless else ""
            if profile is not None:  # say which profile lacks it, and where to add it
                from rolesanywhere_hsm.redact import redact

                raise ConfigError(
                    f"{command} needs {opt.flag}{alternative}: it is not in {profile.where()}, nor "
                    f"given as {' or '.join(places[:-1])}.",
                    hint=f"Add {opt.name} = {_example(opt)} to [profiles.{profile.name}] in "
                    f"{redact(str(profile.path))}, or give {opt.flag}.")
            raise ConfigError(f"{command} needs {opt.flag}{alternative}.",
                              hint=f"Give it as {', '.join(places[:-1])} or {places[-1]}.")
    return settings
