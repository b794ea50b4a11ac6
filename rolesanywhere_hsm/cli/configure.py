"""CLI: `configure`, a named profile and the AWS profile that uses it, written in one step.

`rolesanywhere-hsm configure --config-profile dev --aws-profile dev [credential options]` writes
`[profiles.dev]` into our TOML config (--config / RAH_CONFIG / the XDG default) and a
`[profile dev]` section with `credential_process = rolesanywhere-hsm credential-process
--config-profile dev` into ~/.aws/config (AWS_CONFIG_FILE), keeping every other byte of both
files. The values are checked first (the option table's keys and types, then the session
layer's own checks of ARNs, region, duration), nothing is written with `--dry-run`, and an
existing profile in either file is only replaced with `--force`. Each file is written
atomically under its lock (rolesanywhere_hsm.files.update_atomic).
"""

from __future__ import annotations

import inspect
import os
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer

from rolesanywhere_hsm.cli.table import extra_option, table_parameter
from rolesanywhere_hsm.errors import UsageError
from rolesanywhere_hsm.settings import ConfigError, config_path, options_for

__all__ = ["ConfigurePlan", "aws_config_path", "aws_section", "plan", "register"]

_PROFILE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The options `configure` itself uses: they choose the file and the name, they are not stored.
_META = ("config", "config-profile", "debug")


def aws_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """~/.aws/config, or AWS_CONFIG_FILE as botocore reads it."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("AWS_CONFIG_FILE") or "~/.aws/config").expanduser()


def aws_section(profile: str) -> str:
    """The section botocore reads for an AWS profile: `[default]` or `[profile NAME]`."""
    return "default" if profile == "default" else f"profile {profile}"


@dataclass(frozen=True)
class ConfigurePlan:
    """What `configure` writes: our profile's values and the AWS section's keys."""

    config_file: Path
    config_profile: str
    values: dict[str, Any]
    aws_file: Path
    aws_profile: str
    aws_values: dict[str, str]

    def toml_text(self) -> str:
        from rolesanywhere_hsm.tomltable import render_table

        return render_table(("profiles", self.config_profile), self.values)

    def aws_text(self) -> str:
        lines = [f"[{aws_section(self.aws_profile)}]"]
        lines += [f"{key} = {value}" for key, value in self.aws_values.items()]
        return "\n".join(lines) + "\n"


def credential_process_line(command: str, config_profile: str, config_file: Path | None) -> str:
    """The `credential_process` value: our command, then `--config FILE` when the file is not
    the default one (the SDK runs us without the environment configure saw)."""
    parts = [command, "credential-process", "--config-profile", config_profile]
    if config_file is not None:
        parts += ["--config", shlex.quote(str(config_file))]
    return " ".join(parts)


def plan(flags: Mapping[str, Any], *, aws_profile: str | None, command: str = "rolesanywhere-hsm",
         environ: Mapping[str, str] | None = None) -> ConfigurePlan:
    """Check everything `configure` was given and say what it would write (pure apart from
    reading the environment for the file paths)."""
    from rolesanywhere_hsm.inifile import check_section_name
    from rolesanywhere_hsm.session import CredentialSpec
    from rolesanywhere_hsm.settings import check_profile_values, resolve

    environ = os.environ if environ is None else environ
    name = flags.get("config-profile")
    if not name:
        raise ConfigError("configure needs --config-profile NAME: the profile to write.",
                          hint="For example: --config-profile dev.")
    if not _PROFILE_NAME.fullmatch(name):
        raise ConfigError("The --config-profile name may hold only letters, digits, '-' and '_' "
                          "(at most 64).", hint="Choose a name such as dev or prod-eu.")
    _refuse_undecodable({**flags, "aws-profile": aws_profile, "command": command})
    aws_profile = aws_profile or name
    check_aws_profile_name(aws_profile)
    check_section_name(aws_section(aws_profile))
    config_file = config_path(flags.get("config"), environ)
    values = {key: value for key, value in flags.items() if key not in _META and value is not None}
    where = f"the options for profile '{name}'"
    values = check_profile_values(values, where)  # a secret (a password) is refused here
    _refuse_pin_values(values)
    # The profile must be enough for credential-process on its own: the required options,
    # then the session layer's checks (ARN syntax, region, duration, name, timeout).
    settings = resolve("credential-process", values, environ={})
    missing = [opt.flag for opt in options_for("credential-process")
               if "credential-process" in opt.required_by and settings[opt.name] in (None, "")]
    if missing:
        raise ConfigError(f"configure needs {', '.join(missing)}: the profile must hold every "
                          "value credential-process requires.",
                          hint=f"Add {' '.join(flag + ' ...' for flag in missing)}.")
    CredentialSpec.from_settings(settings)
    explicit = flags.get("config") or environ.get("RAH_CONFIG")
    line = credential_process_line(command, name, config_file.absolute() if explicit else None)
    ordered = {opt.name: values[opt.name] for opt in options_for("credential-process") if opt.name in values}
    return ConfigurePlan(config_file, name, ordered, aws_config_path(environ), aws_profile,
                         {"credential_process": line})


def _refuse_undecodable(values: Mapping[str, Any]) -> None:
    """Both files are UTF-8 text: an argument that is not (bytes the shell passed through
    undecoded) is refused by its option's name, without echoing it."""
    for key, value in values.items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigError(f"The value of --{key} is not valid UTF-8 text, and configure "
                                  "writes UTF-8 files.",
                                  hint="Give it in UTF-8 (check the terminal's or the script's "
                                  "encoding).") from None


# botocore finds `[profile NAME]` by shlex-splitting the section name into exactly two words:
# a name with white space, a quote or a backslash is written but never found.
_UNREADABLE_AWS_PROFILE = re.compile(r"[\s'\"\\]")


def check_aws_profile_name(name: str) -> None:
    """An AWS profile name that the SDKs find again in ~/.aws/config as the same name."""
    if _UNREADABLE_AWS_PROFILE.search(name):
        raise UsageError("The --aws-profile name may not hold white space, quotes or backslashes: "
                         "the AWS SDKs would not find the profile configure writes.",
                         hint="Choose a name such as dev or prod-eu.")


def _refuse_pin_values(values: Mapping[str, Any]) -> None:
    """A PIN is never written to a file: a `pin-value` in a URI is refused (one line, without
    the URI), with the ways that keep the PIN out of the profile; and so is a `pin-source` that
    redaction would hide (not file:, an absolute path, env:NAME or cmd:), which is most likely
    a PIN typed where the source goes."""
    from rolesanywhere_hsm.redact import HIDDEN, redact
    from rolesanywhere_hsm.signers.pkcs11_uri import is_pkcs11_uri, parse_pkcs11_uri

    for key in ("certificate", "private-key"):
        value = values.get(key)
        if not (isinstance(value, str) and is_pkcs11_uri(value)):
            continue
        uri = parse_pkcs11_uri(value)
        if uri.pin_value is not None:
            raise ConfigError(f"The --{key} URI has a pin-value: configure does not write a PIN "
                              "into a file.",
                              hint="Use pin-source=file:/path (a 0600 file) in the URI, set "
                              "RAH_PKCS11_PIN when running, or let the prompt ask.")
        if uri.pin_source is not None and HIDDEN in redact(f"pin-source={uri.pin_source}"):
            raise ConfigError(f"The --{key} URI has a pin-source that is not file:PATH, an "
                              "absolute path, env:NAME or cmd:COMMAND; it may be a PIN, and "
                              "configure does not write a PIN into a file.",
                              hint="Write pin-source=file:/path (a 0600 file), "
                              "pin-source=env:RAH_PIN or pin-source=cmd:..., or leave it out and "
                              "set RAH_PKCS11_PIN when running.")


def _read_text(path: Path, what: str) -> str:
    from rolesanywhere_hsm.files import read_regular_file
    from rolesanywhere_hsm.settings import MAX_CONFIG_BYTES

    if not os.path.lexists(path):
        return ""
    data = read_regular_file(path, what=what, limit=MAX_CONFIG_BYTES, error=ConfigError)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"The {what} file {path} is not UTF-8 text.", hint="Save it as UTF-8.") from None


def new_toml(text: str, plan_: ConfigurePlan, force: bool) -> str:
    """Our config file's text with the profile written; refuses to replace one unless `force`."""
    import tomllib

    from rolesanywhere_hsm.tomltable import TomlEditError, loads, replace_table

    try:
        profiles = loads(text).get("profiles", {}) if text else {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"The config file {plan_.config_file} is not valid TOML: {exc}.",
                          hint="Fix the line it names, then run configure again.") from None
    if isinstance(profiles, dict) and plan_.config_profile in profiles and not force:
        raise UsageError(f"The config file {plan_.config_file} already has a profile "
                         f"'{plan_.config_profile}'.",
                         hint="Add --force to replace it, or choose another --config-profile.")
    try:
        return replace_table(text, ("profiles", plan_.config_profile), plan_.values)
    except TomlEditError as exc:
        raise ConfigError(f"Cannot edit {plan_.config_file} safely: {exc}.",
                          hint=f"Edit [profiles.{plan_.config_profile}] by hand.") from None


def new_aws_config(text: str, plan_: ConfigurePlan, force: bool) -> str:
    """~/.aws/config's text with the section set; refuses to touch one unless `force`."""
    from rolesanywhere_hsm.inifile import has_section, set_section_values

    section = aws_section(plan_.aws_profile)
    if has_section(text, section) and not force:
        raise UsageError(f"{plan_.aws_file} already has the AWS profile '{plan_.aws_profile}' "
                         f"([{section}]).",
                         hint="Add --force to set its credential_process (its other keys stay), "
                         "or choose another --aws-profile.")
    return set_section_values(text, section, plan_.aws_values)


def _write(path: Path, change: Any, what: str) -> None:
    from rolesanywhere_hsm.files import update_atomic

    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        mode = 0o600
    update_atomic(path, lambda old: change("" if old is None else old.decode("utf-8")).encode("utf-8"),
                  mode=mode, what=what)


def configure(flags: dict[str, Any], *, aws_profile: str | None, force: bool, dry_run: bool,
              command: str) -> None:
    """Write a named profile into the config file and the AWS profile that uses it."""
    from rolesanywhere_hsm.cli.fast import configure_logging

    configure_logging(bool(flags.get("debug")))
    if not flags.get("certificate") and flags.get("config-profile") and _interactive():
        chosen = offer_certificate(flags.get("pkcs11-lib"))
        if chosen:
            flags = dict(flags, certificate=chosen)
    plan_ = plan(flags, aws_profile=aws_profile, command=command)
    # Both refusals before either file is written (and again under each file's lock).
    toml_before = _read_text(plan_.config_file, "config")
    aws_before = _read_text(plan_.aws_file, "AWS config")
    new_toml(toml_before, plan_, force)
    new_aws_config(aws_before, plan_, force)
    if dry_run:
        sys.stdout.write(f"# {plan_.config_file}\n{plan_.toml_text()}\n"
                         f"# {plan_.aws_file}\n{plan_.aws_text()}")
        sys.stdout.flush()
        return
    _write(plan_.config_file, lambda text: new_toml(text, plan_, force), "config")
    _write(plan_.aws_file, lambda text: new_aws_config(text, plan_, force), "AWS config")
    print(f"Wrote [profiles.{plan_.config_profile}] to {plan_.config_file} and "
          f"[{aws_section(plan_.aws_profile)}] to {plan_.aws_file}.\n"
          f"Try: aws sts get-caller-identity --profile {plan_.aws_profile}", file=sys.stderr)


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def token_certificates(pkcs11_lib: str | None) -> list[tuple[str, str]]:
    """(description, URI with module-path) of each leaf certificate on the tokens found here,
    as `tokens` lists them (only the module named by --pkcs11-lib / RAH_PKCS11_MODULE when
    there is one, else every module found): public objects only, no PIN asked, CA and attestation certificates
    left out."""
    from rolesanywhere_hsm.signers.pkcs11.inventory import take_inventory
    from rolesanywhere_hsm.signers.pkcs11.modules import known_module_paths

    import os

    paths = known_module_paths(pkcs11_lib)
    named = [(path, why) for path, why in paths if why in ("--pkcs11-lib", "RAH_PKCS11_MODULE")]
    found = []
    seen: set[bytes] = set()
    for module in take_inventory(named or paths, pin_for=None, named=()):
        for token in module.tokens:
            for cert in token.certificates:
                if cert.attestation or cert.info.is_ca:
                    continue
                # One card seen through two modules (a YubiKey through ykcs11 and OpenSC, which
                # report different serials) is offered once, through the first module; each
                # line names its module. The certificate itself is what identifies it.
                if cert.info.der in seen:
                    continue
                seen.add(cert.info.der)
                found.append((f"{cert.info.subject} (token {token.token.label!r}, "
                              f"{cert.info.key_type}, until {cert.not_after:%Y-%m-%d}, "
                              f"module {os.path.basename(module.path)})", cert.uri))
    return found


def offer_certificate(pkcs11_lib: str | None) -> str | None:
    """On a terminal without --certificate: list the tokens' certificates and let the person
    pick one by number (None: nothing found or nothing chosen, and plan() says what is missing)."""
    try:
        choices = token_certificates(pkcs11_lib)
    except Exception:  # noqa: BLE001 (an offer only: without it the usual error follows)
        return None
    if not choices:
        return None
    print("No --certificate given. Certificates on the tokens here:", file=sys.stderr)
    for number, (description, _uri) in enumerate(choices, 1):
        print(f"  {number}. {description}", file=sys.stderr)
    answer = typer.prompt(f"Use which one (1-{len(choices)}, empty for none)", default="",
                          show_default=False, err=True).strip()
    if not answer:
        return None
    if not answer.isdigit() or not 1 <= int(answer) <= len(choices):
        raise UsageError("That is not one of the numbers shown.",
                         hint="Run configure again, or give --certificate.")
    return choices[int(answer) - 1][1]


def _handler() -> Any:
    table = options_for("credential-process")
    extra = [
        extra_option("aws_profile", Optional[str], None, "--aws-profile", metavar="NAME",  # noqa: UP045
                     help="The AWS profile to write in ~/.aws/config (AWS_CONFIG_FILE); "
                     "default: the --config-profile name. `default` is the [default] section."),
        extra_option("force", bool, False, "--force",
                     help="Replace an existing profile in either file."),
        extra_option("dry_run", bool, False, "--dry-run",
                     help="Print what would be written to both files and write nothing."),
        extra_option("command", str, "rolesanywhere-hsm", "--command", metavar="COMMAND",
                     help="How the SDK should start this tool in credential_process (e.g. a full "
                     "path, or `python3 -m rolesanywhere_hsm`)."),
    ]

    def handler(**kwargs: Any) -> None:
        flags = {opt.name: kwargs[opt.attr] for opt in table if kwargs.get(opt.attr) is not None}
        configure(flags, aws_profile=kwargs["aws_profile"], force=kwargs["force"],
                  dry_run=kwargs["dry_run"], command=kwargs["command"])

    params = [table_parameter(opt) for opt in table] + extra
    handler.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    handler.__doc__ = ("Write a named profile ([profiles.NAME] in the config file) and the AWS "
                       "profile whose credential_process uses it (~/.aws/config).")
    return handler


def register(app: typer.Typer) -> None:
    app.command("configure")(_handler())
