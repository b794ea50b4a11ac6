"""The option table: precedence, profiles and their one-line errors, and the fast parser held
to typer's reading of the same command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import given, settings as hsettings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rolesanywhere_hsm.cli.table import table_command
from rolesanywhere_hsm.errors import UsageError
from rolesanywhere_hsm.settings import (
    OPTIONS,
    ConfigError,
    config_path,
    load_profile,
    options_for,
    parse_args,
    resolve,
    settings_for,
)

TA = "arn:aws:rolesanywhere:eu-west-1:111122223333:trust-anchor/a"
PA = "arn:aws:rolesanywhere:eu-west-1:111122223333:profile/p"
RA = "arn:aws:iam::111122223333:role/R"


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


# -- the table itself -----------------------------------------------------------------------

def test_every_option_has_a_unique_name_env_and_help() -> None:
    names = [opt.name for opt in OPTIONS]
    envs = [opt.env for opt in OPTIONS if opt.env]
    assert len(names) == len(set(names))
    assert len(envs) == len(set(envs))
    assert all(opt.help.endswith(".") or opt.help.endswith(")") for opt in OPTIONS)


def test_secrets_cannot_be_kept_in_a_profile() -> None:
    assert all(not opt.in_profile for opt in OPTIONS if opt.secret)


# -- precedence -----------------------------------------------------------------------------

def test_flag_beats_env_beats_profile_beats_default(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[profiles.dev]\nsession-duration = 1800\nregion = "eu-west-1"\n'
                                  'role-arn = "from-profile"\n')
    profile = load_profile(path, "dev")
    env = {"RAH_SESSION_DURATION": "2400", "RAH_ROLE_ARN": "from-env"}
    got = resolve("credential-process", {"role-arn": "from-flag"}, env, profile)
    assert got["role-arn"] == "from-flag" and got.origins["role-arn"] == "flag"
    assert got["session-duration"] == 2400 and got.origins["session-duration"] == "env"
    assert got["region"] == "eu-west-1" and got.origins["region"] == "profile"
    assert got["timeout"] == 20.0 and got.origins["timeout"] == "default"


def test_settings_say_where_a_value_came_from(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[profiles.dev]\nsession-duration = 100\n")
    got = resolve("credential-process", {}, {}, load_profile(path, "dev"))
    assert got.describe("session-duration") == (
        f"session-duration 100 from session-duration in profile 'dev' of {path}")
    assert resolve("credential-process", {}, {"RAH_TIMEOUT": "3"}).spelled("timeout") == "RAH_TIMEOUT"
    assert resolve("credential-process", {"timeout": 3.0}, {}).spelled("timeout") == "--timeout"


def test_a_secret_is_never_described() -> None:
    got = resolve("credential-process", {"pkcs8-password": "hunter2"}, {})
    assert "hunter2" not in got.describe("pkcs8-password")


@pytest.mark.parametrize("command", ["credential-process", "serve", "update",
                                     "read-certificate-data"])  # sign-string takes a key alone
def test_cert_selector_stands_in_for_the_certificate(command: str) -> None:
    """--cert-selector alone picks the certificate among the tokens' (issue 12 item 3)."""
    flags = {"profile-arn": PA, "role-arn": RA, "trust-anchor-arn": TA}
    with pytest.raises(ConfigError, match=r"needs --certificate \(or --cert-selector\)"):
        settings_for(command, flags, {})
    chosen = settings_for(command, {**flags, "cert-selector": "Key=x509Serial,Value=01"}, {})
    assert chosen["certificate"] is None


def test_booleans_from_the_environment() -> None:
    assert resolve("credential-process", {}, {"RAH_REUSE_PIN": "yes"})["reuse-pin"] is True
    assert resolve("credential-process", {}, {"RAH_REUSE_PIN": "0"})["reuse-pin"] is False
    with pytest.raises(ConfigError, match="RAH_REUSE_PIN must be 1 or 0"):
        resolve("credential-process", {}, {"RAH_REUSE_PIN": "maybe"})


def test_a_number_that_is_not_one_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="RAH_SESSION_DURATION must be a whole number"):
        resolve("credential-process", {}, {"RAH_SESSION_DURATION": "1h"})


def test_required_options_name_every_place_they_may_come_from() -> None:
    with pytest.raises(ConfigError) as caught:
        settings_for("credential-process", {"certificate": "c.pem", "profile-arn": PA,
                                            "role-arn": RA}, {})
    assert "needs --trust-anchor-arn" in caught.value.message
    assert "RAH_TRUST_ANCHOR_ARN" in (caught.value.hint or "")


def test_settings_for_loads_the_named_profile(tmp_path: Path) -> None:
    path = write_config(tmp_path, f'[profiles.dev]\ncertificate = "c.pem"\ntrust-anchor-arn = "{TA}"\n'
                                  f'profile-arn = "{PA}"\nrole-arn = "{RA}"\ncache = true\n')
    got = settings_for("credential-process", {"config-profile": "dev"}, {"RAH_CONFIG": str(path)})
    assert got["cache"] is True and got["trust-anchor-arn"] == TA
    got = settings_for("credential-process", {}, {"RAH_CONFIG": str(path), "RAH_CONFIG_PROFILE": "dev"})
    assert got.profile is not None and got.profile.name == "dev"


def test_config_path_order(tmp_path: Path) -> None:
    assert config_path("/a.toml", {"RAH_CONFIG": "/b.toml"}) == Path("/a.toml")
    assert config_path(None, {"RAH_CONFIG": "/b.toml"}) == Path("/b.toml")
    assert config_path(None, {"XDG_CONFIG_HOME": str(tmp_path)}) == (
        tmp_path / "rolesanywhere-hsm" / "config.toml")


# -- profile mistakes: one line naming the file, the profile, the key and the fix ------------

@pytest.mark.parametrize(
    ("text", "profile", "message", "hint"),
    [
        ("[profiles.dev]\nsesion-duration = 900\n", "dev",
         "Unknown key 'sesion-duration' in profile 'dev' of", "Did you mean 'session-duration'?"),
        ('[profiles.dev]\nsession-duration = "1h"\n', "dev",
         "'session-duration' in profile 'dev' of", "Write session-duration = 3600."),
        ("[profiles.dev]\nreuse-pin = 1\n", "dev", "must be true or false", "reuse-pin = true"),
        ('[profiles.dev]\npkcs8-password = "x"\n', "dev", "pkcs8-password cannot be set in a profile",
         "RAH_PKCS8_PASSWORD"),
        ("[profiles.dev]\n", "prod", "has no profile 'prod' (it has: dev)", "[profiles.prod]"),
        ("[other]\n", "dev", "has no [profiles.*] table", "[profiles.dev]"),
        ("[profiles.dev\n", "dev", "is not valid TOML", "Fix the line"),
    ],
)
def test_profile_mistakes(tmp_path: Path, text: str, profile: str, message: str, hint: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_profile(path, profile)
    assert message in caught.value.message
    assert str(path) in caught.value.message
    assert hint in (caught.value.hint or "")
    assert "\n" not in caught.value.message
    assert caught.value.exit_code == 2


def test_a_missing_config_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as caught:
        load_profile(tmp_path / "nope.toml", "dev")
    assert "configure" in (caught.value.hint or "")


# -- the fast parser and typer agree ---------------------------------------------------------

def _typer_reading(command: str, argv: list[str]) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def run(settings: Any) -> None:
        seen.update({name: settings[name] for name in settings if settings.origins[name] == "flag"})

    app = typer.Typer()
    app.command(command)(table_command(command, run))
    app.command("other")(lambda: None)  # two commands: typer then dispatches by name
    result = CliRunner().invoke(app, [command, *argv], env={})
    assert result.exit_code == 0, result.output
    return seen


ARGVS = [
    ["--certificate", "c.pem", "--trust-anchor-arn", TA, "--profile-arn", PA, "--role-arn", RA],
    ["--certificate=pkcs11:token=a;object=b", f"--trust-anchor-arn={TA}", "--profile-arn", PA,
     "--role-arn", RA, "--reuse-pin", "--no-verify-ssl", "--session-duration", "900",
     "--timeout", "2.5", "--cache"],
    ["--certificate", "c", "--trust-anchor-arn", TA, "--profile-arn", PA, "--role-arn", RA,
     "--pkcs11-lib", "/usr/lib/softhsm/libsofthsm2.so", "--endpoint", "http://127.0.0.1:1",
     "--with-proxy", "--no-proxy", "--debug", "--region", "eu-west-1"],
    # the "off" flags, and both ways on one line (the last one counts)
    ["--certificate", "c", "--trust-anchor-arn", TA, "--profile-arn", PA, "--role-arn", RA,
     "--no-cache", "--no-reuse-pin", "--verify-ssl", "--use-proxy", "--token-chain",
     "--tpm-key-has-password", "--no-use-latest-expiring-certificate"],
    ["--certificate", "c", "--trust-anchor-arn", TA, "--profile-arn", PA, "--role-arn", RA,
     "--cache", "--no-cache", "--no-reuse-pin", "--reuse-pin", "--verify-ssl", "--no-verify-ssl"],
]


@pytest.mark.parametrize("argv", ARGVS)
def test_fast_parser_reads_argv_as_typer_does(argv: list[str]) -> None:
    assert parse_args("credential-process", argv) == _typer_reading("credential-process", argv)


_VALUES = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1,
                  max_size=12).filter(lambda v: not v.startswith("-"))


@pytest.mark.slow  # hypothesis over both parsers
@hsettings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(options_for("credential-process")), min_size=1, max_size=6,
                unique_by=lambda o: o.name), st.data())
def test_fast_parser_parity_on_generated_command_lines(chosen: list[Any], data: Any) -> None:
    argv: list[str] = ["--certificate", "c", "--trust-anchor-arn", TA, "--profile-arn", PA,
                       "--role-arn", RA]
    for opt in chosen:
        if opt.name in ("certificate", "trust-anchor-arn", "profile-arn", "role-arn",
                        "config", "config-profile"):  # a profile is read: see the test below
            continue
        if opt.is_flag:
            use_negation = opt.negation_flag is not None and data.draw(st.booleans())
            argv.append(opt.negation_flag if use_negation else opt.flag)
        elif opt.type is int:
            argv += [opt.flag, str(data.draw(st.integers(900, 43200)))]
        elif opt.type is float:
            argv += [opt.flag, str(data.draw(st.integers(1, 60)))]
        else:
            argv += [opt.flag, data.draw(_VALUES)]
    fast = parse_args("credential-process", argv)
    assert fast == _typer_reading("credential-process", argv)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--certificate", "c", "1234"], "unexpected extra arguments"),
        (["--reuse-pin", "1234"], "unexpected extra arguments"),
        (["--1234"], "No such option: (not shown)"),
        (["--Secret1234"], "No such option: (not shown)"),
        (["--certficate", "c"], "Did you mean --certificate?"),
        (["--certificate"], "--certificate needs a value"),
        (["--reuse-pin=yes"], "--reuse-pin takes no value"),
        (["--no-cache=1234"], "--no-cache takes no value"),
        (["--no-cach"], "Did you mean --no-cache?"),
        (["--session-duration", "an hour"], "--session-duration must be a whole number"),
    ],
)
def test_fast_parser_errors_never_echo_values(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_args("credential-process", argv)
    text = caught.value.diagnostics()
    assert message in text
    assert "1234" not in text and "an hour" not in text


def test_fast_parser_parity_with_a_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, f'[profiles.dev]\ncertificate = "c.pem"\ntrust-anchor-arn = "{TA}"\n'
                                  f'profile-arn = "{PA}"\nrole-arn = "{RA}"\n')
    argv = ["--config", str(path), "--config-profile", "dev", "--timeout", "4"]
    assert parse_args("credential-process", argv) == _typer_reading("credential-process", argv)


def test_help_is_left_to_typer() -> None:
    assert parse_args("credential-process", ["--certificate", "c", "--help"]) is None


# -- switches turned off for one run (the "off" flags) ---------------------------------------

SWITCHES = [opt for opt in OPTIONS if opt.is_flag and opt.in_profile]


def test_every_switch_a_profile_may_set_has_an_off_flag_that_names_no_other_option() -> None:
    flags = {opt.flag for opt in OPTIONS}
    without = {opt.name for opt in SWITCHES if opt.negation_flag is None}
    assert without == {"with-proxy"}  # accepted for compatibility and changes nothing
    negations = [opt.negation_flag for opt in SWITCHES if opt.negation_flag]
    assert len(set(negations)) == len(negations) and not flags & set(negations)
    assert all(opt.negation_flag is None for opt in OPTIONS if not opt.is_flag)


@pytest.mark.parametrize("opt", [opt for opt in SWITCHES if opt.negation_flag], ids=lambda o: o.name)
def test_an_off_flag_beats_the_profile_and_the_environment(tmp_path: Path, opt: Any) -> None:
    command = sorted(opt.commands)[0]
    path = write_config(tmp_path, f'[profiles.dev]\n{opt.name} = true\ncertificate = "c.pem"\n'
                                  f'trust-anchor-arn = "{TA}"\nprofile-arn = "{PA}"\nrole-arn = "{RA}"\n')
    argv = ["--config", str(path), "--config-profile", "dev", opt.negation_flag]
    flags = parse_args(command, argv)
    assert flags is not None and flags[opt.name] is False
    assert flags == _typer_reading(command, argv)
    env = {opt.env: "1"} if opt.env else {}
    got = resolve(command, flags, env, load_profile(path, "dev"))
    assert got[opt.name] is False and got.origins[opt.name] == "flag"
    # without it, the profile (or the environment) turns the switch on
    flags.pop(opt.name)
    assert resolve(command, flags, env, load_profile(path, "dev"))[opt.name] is True


def test_the_off_flags_are_in_every_command_built_from_the_table() -> None:
    from rolesanywhere_hsm.cli.typer_app import app

    group = typer.main.get_command(app)
    for name in ("credential-process", "serve", "update", "doctor", "sign-string", "read-certificate-data",
                 "configure"):
        command = group.commands[name]  # type: ignore[attr-defined]
        shown = {flag for param in command.params for flag in getattr(param, "secondary_opts", ())}
        table = "credential-process" if name == "configure" else name
        wanted = {opt.negation_flag for opt in options_for(table) if opt.negation_flag}
        assert wanted and shown >= wanted, name
