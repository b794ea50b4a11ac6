"""`rolesanywhere-hsm configure`: botocore gets credentials through the profiles it writes (a
SoftHSM key, the emulator), both files keep every other byte, --dry-run writes nothing, existing
profiles are not replaced without --force, and mistakes in the config file are one-line errors
(exit 2) naming the file, the profile, the key and the fix, through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, write_pem
from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
from rolesanywhere_hsm._dev.softhsm import SoftHsmToken
from tests.fixtures.softhsm import SOFTHSM_PIN
from tests.clirunner import run_cli

ROOT = Path(__file__).parents[2]
U = "a0b1c2d3-0000-4000-8000-000000000001"
TA = f"arn:aws:rolesanywhere:eu-west-1:111122223333:trust-anchor/{U}"
PA = f"arn:aws:rolesanywhere:eu-west-1:111122223333:profile/{U}"
RA = "arn:aws:iam::111122223333:role/R"
ARNS = ["--trust-anchor-arn", TA, "--profile-arn", PA, "--role-arn", RA]

AWS_CONFIG = (
    "# my settings; configure must not touch them\n"
    "[default]\n"
    "region = eu-west-1\n"
    "\n"
    "; a comment between sections\n"
    "[profile other]   \n"
    "output=json\n"
    "  continued = yes\n"
)
OUR_CONFIG = (
    "# named profiles\n"
    "[profiles.prod]\n"
    'certificate = "/etc/prod.pem"  # the fleet certificate\n'
    "cache = true\n"
    "\n"
    "# keep this comment\n"
    "[profiles.other]\n"
    "session-duration = 900\n"
)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    aws = tmp_path / "aws" / "config"
    aws.parent.mkdir()
    aws.write_text(AWS_CONFIG)
    ours = tmp_path / "rah.toml"
    ours.write_text(OUR_CONFIG)
    return aws, ours


def env_for(aws: Path, ours: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in (base or os.environ).items() if not k.startswith(("AWS_", "RAH_"))}
    keep = {k: v for k, v in (base or {}).items() if k.startswith("RAH_PKCS11")}
    env.update(keep, AWS_CONFIG_FILE=str(aws), RAH_CONFIG=str(ours), PYTHONPATH=str(ROOT))
    return env


def cli(args: list[Any], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, cwd=ROOT)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    text = result.stderr.strip()
    assert len(text.splitlines()) <= 2, text  # the message, then its fix
    for part in parts:
        assert part in text, (part, text)


@pytest.fixture
def server(root_ca: CertificateAuthority) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig.for_certificates([root_ca.certificate])) as emulator:
        yield emulator


@pytest.mark.softhsm
def test_botocore_reads_credentials_through_a_configured_profile(
    server: Emulator, softhsm_token: SoftHsmToken, softhsm_env: dict[str, str],
    intermediate_ca: CertificateAuthority, files: tuple[Path, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import botocore.session

    aws, ours = files
    chain = write_pem(tmp_path / "chain.pem", intermediate_ca.certificate)
    env = env_for(aws, ours, softhsm_env)
    result = cli(["configure", "--config-profile", "dev", "--aws-profile", "ra-dev",
                  "--certificate", softhsm_token.uri_for("ec-p256", type="cert"),
                  "--intermediates", str(chain), "--trust-anchor-arn", server.trust_anchor_arn,
                  "--profile-arn", server.profile_arn, "--role-arn", server.role_arn,
                  "--endpoint", server.url, "--command", f"{sys.executable} -m rolesanywhere_hsm"],
                 env)
    assert result.returncode == 0, result.stderr
    assert aws.read_text().startswith(AWS_CONFIG)  # every byte before is unchanged
    assert ours.read_text().startswith(OUR_CONFIG)
    written = tomllib.loads(ours.read_text())["profiles"]["dev"]
    assert written["role-arn"] == server.role_arn and "pkcs11-pin" not in str(written)

    for name in [k for k in os.environ if k.startswith(("AWS_", "RAH_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith(("AWS_", "RAH_", "SOFTHSM2", "PYTHONPATH")):
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("RAH_CONFIG")  # the credential_process line names the file itself
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    credentials = botocore.session.Session(profile="ra-dev").get_credentials().get_frozen_credentials()
    issued = server.last_issued
    assert (credentials.access_key, credentials.secret_key, credentials.token) == (
        issued.access_key_id, issued.secret_access_key, issued.session_token)
    assert issued.leaf_serial == softhsm_token.keys["ec-p256"].certificate.serial_number


def test_the_credential_process_line_and_the_default_profile(files: tuple[Path, Path]) -> None:
    aws, ours = files
    args = ["configure", "--config-profile", "dev", "--aws-profile", "default", "--certificate",
            "/c.pem", *ARNS, "--force"]
    result = cli(args, env_for(aws, ours))
    assert result.returncode == 0, result.stderr
    text = aws.read_text()
    # [default] gets the key added after its last one; the rest stays as it was.
    assert text == AWS_CONFIG.replace(
        "region = eu-west-1\n",
        "region = eu-west-1\ncredential_process = rolesanywhere-hsm credential-process "
        f"--config-profile dev --config {ours}\n")


def test_dry_run_writes_nothing_and_shows_both_sections(files: tuple[Path, Path]) -> None:
    aws, ours = files
    before = (aws.read_bytes(), ours.read_bytes(), sorted(os.listdir(aws.parent)))
    result = cli(["configure", "--config-profile", "dev", "--certificate", "/c.pem", *ARNS,
                  "--session-duration", "1800", "--dry-run"], env_for(aws, ours))
    assert result.returncode == 0, result.stderr
    assert (aws.read_bytes(), ours.read_bytes(), sorted(os.listdir(aws.parent))) == before
    assert "[profiles.dev]\n" in result.stdout and "session-duration = 1800\n" in result.stdout
    assert "[profile dev]\ncredential_process = rolesanywhere-hsm credential-process " \
           "--config-profile dev" in result.stdout
    assert str(aws) in result.stdout and str(ours) in result.stdout


def test_refuses_to_overwrite_either_profile_without_force(files: tuple[Path, Path]) -> None:
    aws, ours = files
    before = (aws.read_bytes(), ours.read_bytes())
    # The AWS profile exists: nothing is written, not even our (new) profile.
    result = cli(["configure", "--config-profile", "new", "--aws-profile", "other",
                  "--certificate", "/c.pem", *ARNS], env_for(aws, ours))
    assert_one_line_error(result, "already has the AWS profile 'other'", "--force")
    # Our profile exists.
    result = cli(["configure", "--config-profile", "prod", "--certificate", "/c.pem", *ARNS],
                 env_for(aws, ours))
    assert_one_line_error(result, f"{ours} already has a profile 'prod'", "--force")
    assert (aws.read_bytes(), ours.read_bytes()) == before

    result = cli(["configure", "--config-profile", "prod", "--aws-profile", "other",
                  "--certificate", "/new.pem", *ARNS, "--force"], env_for(aws, ours))
    assert result.returncode == 0, result.stderr
    text = ours.read_text()
    assert text.startswith("# named profiles\n[profiles.prod]\ncertificate = \"/new.pem\"\n")
    assert text.endswith("\n# keep this comment\n[profiles.other]\nsession-duration = 900\n")
    assert "cache" not in tomllib.loads(text)["profiles"]["prod"]  # replaced, not merged
    assert "[profile other]   \noutput=json\n  continued = yes\ncredential_process = " in aws.read_text()


@pytest.mark.parametrize(
    ("extra", "parts"),
    [
        (["--pkcs8-password", "s3cret-value"], ["pkcs8-password cannot be set in a profile",
                                                "RAH_PKCS8_PASSWORD"]),
        (["--tpm-key-password", "s3cret-value"], ["tpm-key-password cannot be set in a profile"]),
        (["--role-arn", "arn:aws:iam::1:bad"], []),
        (["--session-duration", "10"], ["--session-duration 10 is out of range", "900..43200"]),
        (["--private-key", "pkcs11:token=t;object=k?pin-value=s3cret-value"],
         ["has a pin-value: configure does not write a PIN", "pin-source=file:"]),
    ],
)
def test_values_are_checked_before_writing(files: tuple[Path, Path], extra: list[str],
                                           parts: list[str]) -> None:
    aws, ours = files
    before = (aws.read_bytes(), ours.read_bytes())
    args = ["configure", "--config-profile", "dev", "--certificate", "/c.pem",
            "--trust-anchor-arn", TA, "--profile-arn", PA, "--role-arn", RA, *extra]
    result = cli(args, env_for(aws, ours))
    assert_one_line_error(result, *parts)
    assert "s3cret-value" not in result.stderr
    assert (aws.read_bytes(), ours.read_bytes()) == before


@pytest.mark.parametrize("pin_source", ["MARKER-PIN-9876", "env:lower9876", "9876", "%39876"])
@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_a_pin_typed_where_a_pin_source_goes_is_refused_and_never_shown(
        files: tuple[Path, Path], pin_source: str, dry_run: list[str]) -> None:
    aws, ours = files
    before = (aws.read_bytes(), ours.read_bytes())
    uri = f"pkcs11:token=t;object=k?pin-source={pin_source}"
    result = cli(["configure", "--config-profile", "dev", "--certificate", uri, *ARNS, *dry_run],
                 env_for(aws, ours))
    assert_one_line_error(result, "has a pin-source that is not file:PATH", "configure does not write a PIN")
    shown = pin_source.replace("%3", "")
    assert shown not in result.stderr and shown not in result.stdout
    assert (aws.read_bytes(), ours.read_bytes()) == before


@pytest.mark.parametrize("pin_source", ["file:/etc/pin", "/etc/pin", "env:RAH_PIN", "cmd:pass show pin"])
def test_pin_sources_redaction_shows_are_written(files: tuple[Path, Path], pin_source: str) -> None:
    aws, ours = files
    uri = f"pkcs11:token=t;object=k?pin-source={pin_source}"
    result = cli(["configure", "--config-profile", "dev", "--certificate", uri, *ARNS], env_for(aws, ours))
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(ours.read_text())["profiles"]["dev"]["certificate"] == uri


@pytest.mark.parametrize("name", ["my prof", "my\tprof", "it's", 'say"hi"', "back\\slash"])
def test_an_aws_profile_name_the_sdks_would_not_find_is_refused(files: tuple[Path, Path], name: str) -> None:
    aws, ours = files
    before = (aws.read_bytes(), ours.read_bytes())
    result = cli(["configure", "--config-profile", "dev", "--aws-profile", name, "--certificate", "/c.pem",
                  *ARNS], env_for(aws, ours))
    assert_one_line_error(result, "--aws-profile name may not hold white space, quotes or backslashes")
    assert (aws.read_bytes(), ours.read_bytes()) == before


@pytest.mark.parametrize("name", ["dev.eu-west_1", "team+ci@example", "a/b:c", "dev"])
def test_the_aws_profiles_configure_writes_are_found_by_botocore(files: tuple[Path, Path], name: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore.session

    aws, ours = files
    result = cli(["configure", "--config-profile", "dev", "--aws-profile", name, "--certificate", "/c.pem",
                  *ARNS], env_for(aws, ours))
    assert result.returncode == 0, result.stderr
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws))
    found = botocore.session.Session().full_config["profiles"]
    assert found[name]["credential_process"].startswith("rolesanywhere-hsm credential-process --config-profile dev")


def test_a_non_utf8_argument_is_a_usage_error(files: tuple[Path, Path]) -> None:
    aws, ours = files
    before = (aws.read_bytes(), ours.read_bytes())
    for extra in (["--certificate", b"/etc/\xff.pem"], ["--certificate", "/c.pem", "--aws-profile", b"a\xffb"]):
        for dry_run in ([], ["--dry-run"]):
            args: list[Any] = ["configure", "--config-profile", "dev", *ARNS, *extra, *dry_run]
            result = cli(args, env_for(aws, ours))
            assert_one_line_error(result, "is not valid UTF-8 text")
            assert (aws.read_bytes(), ours.read_bytes()) == before


def test_a_config_file_nested_too_deeply_is_a_usage_error(files: tuple[Path, Path]) -> None:
    aws, ours = files
    ours.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    result = cli(["configure", "--config-profile", "dev", "--certificate", "/c.pem", *ARNS], env_for(aws, ours))
    assert_one_line_error(result, f"The config file {ours} is not valid TOML: it is nested too deeply")
    for command in ("credential-process", "update"):
        assert_one_line_error(cli([command, "--config-profile", "dev"], env_for(aws, ours)),
                              "is not valid TOML: it is nested too deeply")


def test_a_profile_without_a_required_value_is_refused(files: tuple[Path, Path]) -> None:
    aws, ours = files
    result = cli(["configure", "--config-profile", "dev", "--certificate", "/c.pem",
                  "--trust-anchor-arn", TA, "--profile-arn", PA], env_for(aws, ours))
    assert_one_line_error(result, "configure needs --role-arn")


# -- mistakes in the config file, through the CLI: file, profile, key and fix, exit 2 ---------

@pytest.mark.parametrize("command", ["credential-process", "serve", "update", "sign-string", "doctor"])
@pytest.mark.parametrize(
    ("text", "profile", "parts"),
    [
        ("[profiles.dev]\nsesion-duration = 900\n", "dev",
         ["Unknown key 'sesion-duration' in profile 'dev' of {file}", "Did you mean 'session-duration'?"]),
        ('[profiles.dev]\nsession-duration = "1h"\n', "dev",
         ["'session-duration' in profile 'dev' of {file} must be a whole number",
          "Write session-duration = 3600."]),
        ("[profiles.dev]\nrole-arn = 5\n", "dev",
         ["'role-arn' in profile 'dev' of {file} must be a string", 'role-arn = "..."']),
        ("[profiles.dev]\n", "prod",
         ["{file} has no profile 'prod' (it has: dev)", "Add a [profiles.prod] table"]),
    ],
)
def test_config_file_mistakes_through_the_cli(tmp_path: Path, command: str, text: str, profile: str,
                                              parts: list[str]) -> None:
    ours = tmp_path / "rah.toml"
    ours.write_text(text)
    env = env_for(tmp_path / "aws-config", ours)
    result = cli([command, "--config-profile", profile], env)
    assert_one_line_error(result, *(part.format(file=ours) for part in parts))


@pytest.mark.parametrize("command", ["credential-process", "serve", "update"])
def test_a_missing_required_value_names_the_profile_and_the_key(tmp_path: Path, command: str) -> None:
    ours = tmp_path / "rah.toml"
    ours.write_text(f'[profiles.dev]\ncertificate = "/c.pem"\ntrust-anchor-arn = "{TA}"\n'
                    f'profile-arn = "{PA}"\n')
    env = dict(env_for(tmp_path / "aws-config", ours), RAH_CONFIG_PROFILE="dev")
    result = cli([command], env)
    assert_one_line_error(result, f"{command} needs --role-arn", f"profile 'dev' of {ours}",
                          'Add role-arn = "..." to [profiles.dev]')


def test_a_bad_value_from_a_profile_is_named_as_the_profile_key(tmp_path: Path) -> None:
    ours = tmp_path / "rah.toml"
    ours.write_text(f'[profiles.dev]\ncertificate = "/c.pem"\ntrust-anchor-arn = "{TA}"\n'
                    f'profile-arn = "{PA}"\nrole-arn = "{RA}"\nsession-duration = 100\n')
    env = env_for(tmp_path / "aws-config", ours)
    result = cli(["credential-process", "--config-profile", "dev"], env)
    assert_one_line_error(result, f"session-duration in profile 'dev' of {ours}: 100 is out of range")
    # The flag wins over the profile (flag > env > profile > default) and is named as a flag.
    result = cli(["credential-process", "--config-profile", "dev", "--session-duration", "5"], env)
    assert_one_line_error(result, "--session-duration 5 is out of range")
    result = cli(["credential-process", "--config-profile", "dev"], dict(env, RAH_SESSION_DURATION="7"))
    assert_one_line_error(result, "RAH_SESSION_DURATION: 7 is out of range")


# -- one profile for every command that takes the credential options -------------------------

def test_one_profile_drives_sign_string_update_and_doctor(
    server: Emulator, leaf_files: dict[str, Any], tmp_path: Path,
) -> None:
    files = leaf_files["rsa2048"]
    ours = tmp_path / "rah.toml"
    ours.write_text(
        f'[profiles.dev]\ncertificate = "{files.certificate}"\nprivate-key = "{files.key}"\n'
        f'trust-anchor-arn = "{server.trust_anchor_arn}"\nprofile-arn = "{server.profile_arn}"\n'
        f'role-arn = "{server.role_arn}"\nendpoint = "{server.url}"\n')
    env = env_for(tmp_path / "aws-config", ours)
    # sign-string takes the key from the profile (and ignores its ARNs): RSA signatures are
    # deterministic, so the profile's run must print what the flags' run prints.
    by_flags = cli(["sign-string", "--certificate", str(files.certificate), "--private-key",
                    str(files.key), "--format", "text"], env)
    by_profile = cli(["sign-string", "--config-profile", "dev", "--format", "text"], env)
    assert by_flags.returncode == 0 and by_profile.returncode == 0, by_profile.stderr
    assert by_profile.stdout == by_flags.stdout and len(by_profile.stdout) == 512

    credentials_file = tmp_path / "credentials"
    env_update = dict(env, AWS_SHARED_CREDENTIALS_FILE=str(credentials_file), RAH_CONFIG_PROFILE="dev")
    result = cli(["update", "--once", "--profile", "ra"], env_update)
    assert result.returncode == 0, result.stderr
    assert server.last_issued.access_key_id in credentials_file.read_text()

    result = cli(["doctor", "--config-profile", "dev", "--json"], env)
    checks = {c["name"]: c["status"] for c in json.loads(result.stdout)["checks"]}
    assert checks.get("key") != "fail" and "fail" not in checks.values(), result.stdout
    # The flag beats the profile: a bad --role-arn on the command line is the one used.
    result = cli(["credential-process", "--config-profile", "dev", "--role-arn", "arn:aws:iam::1:bad"], env)
    assert result.returncode == 2 and "The role ARN 'arn:aws:iam::1:bad'" in result.stderr


@pytest.mark.softhsm
def test_on_a_terminal_the_tokens_certificates_are_offered(
    softhsm_token: SoftHsmToken, softhsm_env: dict[str, str], files: tuple[Path, Path],
) -> None:
    import pty
    import select

    aws, ours = files
    env = env_for(aws, ours, softhsm_env)
    env.pop("RAH_PKCS11_PIN", None)  # listing certificates needs no PIN
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "rolesanywhere_hsm", "configure", "--config-profile", "tty",
         "--pkcs11-lib", softhsm_token.module, *ARNS],
        stdin=slave, stdout=subprocess.PIPE, stderr=slave, env=env, cwd=ROOT, start_new_session=True)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while b"Use which one" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                seen += os.read(master, 4096)
        listing = seen.decode(errors="replace")
        lines = [line.strip() for line in listing.splitlines() if line.strip()[:1].isdigit()]
        number = next(line.split(".")[0] for line in lines if "Common Name: ec-p256 " in line)
        os.write(master, f"{number}\n".encode())
        process.wait(timeout=60)
        while select.select([master], [], [], 0.2)[0]:
            try:
                seen += os.read(master, 4096)
            except OSError:
                break
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    assert process.returncode == 0, seen.decode(errors="replace")
    written = tomllib.loads(ours.read_text())["profiles"]["tty"]["certificate"]
    assert written.startswith("pkcs11:") and "module-path=" in written, written
    assert "id=%01" in written  # ec-p256's CKA_ID: the URI of the certificate chosen
    assert SOFTHSM_PIN not in seen.decode(errors="replace")


@pytest.mark.yubikey
def test_the_certificate_offer_lists_a_card_seen_through_two_modules_once(yubikey: Any) -> None:
    from rolesanywhere_hsm.cli.configure import token_certificates

    offered = token_certificates(None)
    on_card = [d for d, _uri in offered if "module libykcs11.so" in d or "module opensc-pkcs11.so" in d]
    assert on_card, offered
    subjects = [d.split(" (token ")[0] for d in on_card]
    assert len(subjects) == len(set(subjects)), on_card  # each certificate once, with its module named


def test_a_switch_a_profile_turns_on_is_turned_off_for_one_run(
        server: Emulator, leaf_files: dict[str, Any], tmp_path: Path) -> None:
    """`cache = true` in the profile: `--no-cache` makes this run fetch and leave the cache
    alone; without it, the next run is served from the cache."""
    leaf = leaf_files["p256"]
    ours = tmp_path / "rah.toml"
    ours.write_text(f'[profiles.dev]\ncache = true\ncertificate = "{leaf.certificate}"\n'
                    f'private-key = "{leaf.key}"\ntrust-anchor-arn = "{server.trust_anchor_arn}"\n'
                    f'profile-arn = "{server.profile_arn}"\nrole-arn = "{server.role_arn}"\n'
                    f'endpoint = "{server.url}"\n'
                    + (f'intermediates = "{leaf.chain}"\n' if leaf.chain else ""))
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = dict(env_for(tmp_path / "aws-config", ours), XDG_RUNTIME_DIR=str(runtime))
    for _ in range(2):
        result = cli(["credential-process", "--config-profile", "dev", "--no-cache"], env)
        assert result.returncode == 0, result.stderr
    assert len(server.issued) == 2 and not (runtime / "rolesanywhere-hsm").exists()
    for _ in range(2):
        assert cli(["credential-process", "--config-profile", "dev"], env).returncode == 0
    assert len(server.issued) == 3  # the profile's cache = true: the second run was a hit
