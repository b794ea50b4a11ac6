"""An error about one setting names it as its user gave it (issue 17, item 4): the flag or the
environment variable on the command line, the key and file of a profile, the keyword of
`boto3_session` / `create_session`. And `retryable` is a property of the error class."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from rolesanywhere_hsm import errors
from rolesanywhere_hsm.errors import UsageError
from tests.clirunner import run_cli

TA = "arn:aws:rolesanywhere:us-east-1:111122223333:trust-anchor/0b6b9c7e-6f5c-4c3e-9a3e-2b1d0f5a1c11"
PA = "arn:aws:rolesanywhere:us-east-1:111122223333:profile/4c1a2b3c-0d1e-4f5a-8b6c-7d8e9f0a1b2c"
RA = "arn:aws:iam::111122223333:role/r"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    for name in [k for k in os.environ if k.startswith(("RAH_", "AWS_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("RAH_CONFIG", str(tmp_path / "absent.toml"))
    return dict(os.environ)


def test_boto3_session_names_the_keyword(clean_env: dict[str, str]) -> None:
    from rolesanywhere_hsm import boto3_session

    with pytest.raises(UsageError) as raised:
        boto3_session(certificate="c.pem", trust_anchor_arn=TA, profile_arn=PA, role_arn=RA,
                      session_duration=100)
    assert raised.value.message == "session_duration 100 is out of range."
    assert raised.value.setting == "session-duration"
    with pytest.raises(UsageError, match=r"^timeout 0 is not a usable time budget"):
        boto3_session(certificate="c.pem", trust_anchor_arn=TA, profile_arn=PA, role_arn=RA, timeout=0)


def test_create_session_names_its_own_keyword() -> None:
    from rolesanywhere_hsm import SignerConfig, create_session

    with pytest.raises(UsageError) as raised:
        create_session(SignerConfig(certificate="c.pem"), trust_anchor_arn=TA, profile_arn=PA,
                       role_arn=RA, duration_seconds=100)
    assert raised.value.message == "duration_seconds 100 is out of range."


def test_a_profile_names_the_key_and_the_file(clean_env: dict[str, str], tmp_path: Path) -> None:
    from rolesanywhere_hsm import boto3_session

    config = tmp_path / "config.toml"
    config.write_text(f'[profiles.dev]\ncertificate = "c.pem"\ntrust-anchor-arn = "{TA}"\n'
                      f'profile-arn = "{PA}"\nrole-arn = "{RA}"\nsession-duration = 100\n')
    os.environ["RAH_CONFIG"] = str(config)
    with pytest.raises(UsageError) as raised:
        boto3_session("dev")
    assert raised.value.message == f"session-duration in profile 'dev' of {config}: 100 is out of range."
    result = run_cli("credential-process", "--config-profile", "dev", env=dict(os.environ))
    assert result.returncode == 2
    assert f"session-duration in profile 'dev' of {config}: 100 is out of range." in result.stderr


def test_the_cli_names_the_flag_or_the_variable(clean_env: dict[str, str]) -> None:
    args = ["credential-process", "--certificate", "c.pem", "--trust-anchor-arn", TA, "--profile-arn", PA,
            "--role-arn", RA]
    flag = run_cli(*args, "--session-duration", "100", env=clean_env)
    assert flag.returncode == 2 and "--session-duration 100 is out of range." in flag.stderr
    variable = run_cli(*args, env=dict(clean_env, RAH_SESSION_DURATION="100"))
    assert variable.returncode == 2 and "RAH_SESSION_DURATION: 100 is out of range." in variable.stderr
    region = run_cli(*args, "--region", "eu-west-1", env=clean_env)
    assert "--region eu-west-1 does not match" in region.stderr and "drop --region" in region.stderr


def test_naming_a_setting_rewrites_message_and_hint_only_there() -> None:
    error = UsageError(f"{errors.SETTING} 7 is bad.", hint=f"Fix {errors.SETTING}.", setting="x-y")
    assert (error.message, error.hint, str(error)) == ("x-y 7 is bad.", "Fix x-y.", "x-y 7 is bad.")
    error.name_setting("--x-y")
    assert (error.message, error.hint, str(error)) == ("--x-y 7 is bad.", "Fix --x-y.", "--x-y 7 is bad.")
    assert UsageError("no setting {here}").message == "no setting {here}"


def test_retryable_is_a_property_of_the_class() -> None:
    assert errors.TransportError.retryable is True
    assert errors.TlsVerificationError.retryable is False
    assert errors.AnswerTooLargeError.retryable is False
    assert errors.DeadlineExceededError.retryable is False
    assert errors.UsageError.retryable is False
    # ...and no raising site sets it on an instance.
    for path in (ROOT / "rolesanywhere_hsm").rglob("*.py"):
        source = path.read_text()
        if "retryable" not in source:  # no such attribute to set: skip the parse (most files)
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Attribute) and target.attr == "retryable":
                        pytest.fail(f"{path}: sets .retryable on an instance")
