"""The cache hit's own path (issue 21): the key computed from the settings before validation is
the key a miss stores under, for every way of giving the settings; an input that fails
validation is reported exactly as without a cache entry; the entry reader without json or
datetime reads what json and datetime read, or leaves the entry to them."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rolesanywhere_hsm.cache import CredentialCache, _plain_json, epoch_seconds
from rolesanywhere_hsm.cachekey import hit_key
from rolesanywhere_hsm.cli import main
from rolesanywhere_hsm.credentials import Credentials, format_expiration
from rolesanywhere_hsm.settings import parse_args, settings_for
from rolesanywhere_hsm.spec import CredentialSpec

ANCHOR = "arn:aws:rolesanywhere:eu-west-1:111122223333:trust-anchor/11111111-2222-3333-4444-555555555555"
PROFILE = "arn:aws:rolesanywhere:eu-west-1:111122223333:profile/11111111-2222-3333-4444-666666666666"
ROLE = "arn:aws:iam::111122223333:role/Workload"
ARNS = ["--trust-anchor-arn", ANCHOR, "--profile-arn", PROFILE, "--role-arn", ROLE]
# Unreachable: a run that fetched instead of hitting fails (exit 7), so a hit is provable.
DEAD_END = ["--endpoint", "http://127.0.0.1:9", "--timeout", "2"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("RAH_", "AWS_", "SOFTHSM2_", "TPM2_PKCS11_", "TSS2_", "P11_KIT_",
                            "PCSCLITE_", "OPENSC_", "YKCS11_")):
            monkeypatch.delenv(name)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    made = {}
    for name in ("leaf.pem", "leaf.key", "chain.pem", "selector.json", "softhsm2.conf"):
        (tmp_path / name).write_text(name)
        made[name] = str(tmp_path / name)
    (tmp_path / "config.toml").write_text(
        '[profiles.dev]\n'
        f'certificate = "{made["leaf.pem"]}"\nprivate-key = "{made["leaf.key"]}"\n'
        f'trust-anchor-arn = "{ANCHOR}"\nprofile-arn = "{PROFILE}"\nrole-arn = "{ROLE}"\n'
        'session-duration = 1800\nregion = "eu-west-1"\nrole-session-name = "ci.job-1"\n'
        'timeout = 7\ncache = true\nno-verify-ssl = true\n'
        '[profiles.tokens]\n'
        f'trust-anchor-arn = "{ANCHOR}"\nprofile-arn = "{PROFILE}"\nrole-arn = "{ROLE}"\n'
        'cert-selector = "Key=x509Subject,Value=CN=leaf"\nuse-latest-expiring-certificate = true\n'
        'pkcs11-lib = "/usr/lib/softhsm/libsofthsm2.so"\n')
    made["config"] = str(tmp_path / "config.toml")
    return made


def _scenarios(f: dict[str, str]) -> dict[str, tuple[list[str], dict[str, str]]]:
    """argv and environment, each a way of naming a source that a user may give."""
    key = ["--certificate", f["leaf.pem"], "--private-key", f["leaf.key"]]
    uri = "pkcs11:token=t;object=leaf;type=cert"
    return {
        "flags": ([*key, *ARNS], {}),
        "flags with = and spaces around the ARNs": (
            [f"--certificate={f['leaf.pem']}", "--private-key", f["leaf.key"], "--trust-anchor-arn",
             f"  {ANCHOR}\t", f"--profile-arn={PROFILE} ", "--role-arn", f"\n{ROLE}"], {}),
        "every switch": ([*key, *ARNS, "--no-verify-ssl", "--no-proxy", "--no-token-chain",
                          "--reuse-pin", "--no-tpm-key-password", "--intermediates", f["chain.pem"],
                          "--session-duration", "43200", "--role-session-name", "a@b.c",
                          "--region", "eu-west-1", "--timeout", "0.5", "--cache"], {}),
        "relative paths": (["--certificate", os.path.relpath(f["leaf.pem"]), "--private-key",
                            os.path.relpath(f["leaf.key"]), *ARNS], {}),
        "environment": ([], {"RAH_CERTIFICATE": f["leaf.pem"], "RAH_PRIVATE_KEY": f["leaf.key"],
                             "RAH_TRUST_ANCHOR_ARN": ANCHOR, "RAH_PROFILE_ARN": PROFILE,
                             "RAH_ROLE_ARN": ROLE, "RAH_SESSION_DURATION": "900", "RAH_TIMEOUT": "30",
                             "AWS_CA_BUNDLE": f["chain.pem"], "RAH_CACHE": "1",
                             "AWS_USE_FIPS_ENDPOINT": "true", "SOFTHSM2_CONF": f["softhsm2.conf"],
                             "TPM2_PKCS11_STORE": "/nonexistent/store"}),
        "endpoint from the environment": ([*key, *ARNS], {"AWS_ENDPOINT_URL": "http://127.0.0.1:1"}),
        "profile": (["--config", f["config"], "--config-profile", "dev"], {}),
        "profile from the environment, a flag over it": (
            ["--session-duration", "3600"], {"RAH_CONFIG": f["config"], "RAH_CONFIG_PROFILE": "dev"}),
        "token URI with a PIN": (["--certificate", uri + "?pin-value=1234", *ARNS,
                                  "--pkcs11-lib", "/usr/lib/softhsm/libsofthsm2.so"], {}),
        "selector with a token URI": (["--certificate", "pkcs11:token=t", "--cert-selector",
                                       "Key=x509Serial,Value=0a", *ARNS], {}),
        "selector alone, from a profile": (["--config", f["config"], "--config-profile", "tokens"], {}),
    }


def _settings(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    flags = parse_args("credential-process", argv)
    assert flags is not None
    return settings_for("credential-process", flags)


@pytest.mark.parametrize("scenario", list(_scenarios({n: n for n in (
    "leaf.pem", "leaf.key", "chain.pem", "selector.json", "softhsm2.conf", "config")})))
def test_the_hit_key_is_the_key_a_miss_stores_under(
    scenario: str, files: dict[str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv, env = _scenarios(files)[scenario]
    settings = _settings(argv, env, monkeypatch)
    stored = CredentialSpec.from_settings(settings).cache_key()  # what a miss validates and stores
    assert hit_key(settings) == stored
    assert len(stored) == 64


def test_a_selector_file_is_validated_before_any_hit(files: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Its validation reads the file, which the key names by identity only."""
    settings = _settings(["--certificate", "pkcs11:token=t", "--cert-selector",
                          "file://" + files["selector.json"], *ARNS], {}, monkeypatch)
    assert hit_key(settings) is None


@pytest.mark.parametrize("changes", [
    {"region": "eu-west-1"}, {"timeout": 19.0}, {"private_key": ""}, {"private_key": "."},
    {"trust_anchor_arn": ANCHOR.replace("eu-west-1", "eu-west-2")}, {"duration_seconds": 3600.0},
    {"cert_selector": ""}, {"role_session_name": "ci"},
])
def test_every_value_the_checks_read_is_in_the_key(changes: dict[str, Any]) -> None:
    """Equal keys must mean equal validation outcomes: a value the checks read changes the key."""
    from rolesanywhere_hsm.cachekey import cache_key

    base = {"certificate": "pkcs11:token=t", "trust_anchor_arn": ANCHOR, "profile_arn": PROFILE,
            "role_arn": ROLE, "private_key": None, "intermediates": None, "pkcs11_lib": None,
            "reuse_pin": False, "region": None, "endpoint": None, "duration_seconds": 3600,
            "role_session_name": None, "verify": True, "trust_env": True, "timeout": 20.0,
            "no_tpm_key_password": False, "cert_selector": None,
            "use_latest_expiring_certificate": False, "token_chain": True}
    assert cache_key(**{**base, **changes}) != cache_key(**base)


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(["credential-process", *argv])
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def _stored(tmp_path: Path, settings: Any, credentials: Credentials, issued: dt.datetime) -> None:
    CredentialCache(tmp_path / "cache").store(CredentialSpec.from_settings(settings).cache_key(),
                                              credentials, issued_at=issued)


@pytest.mark.parametrize("bad", [
    ["--region", "us-east-1"],
    ["--timeout", "0"],
    ["--role-session-name", "x"],
    ["--session-duration", "100"],
    ["--profile-arn", "not-an-arn"],
    ["--trust-anchor-arn", ANCHOR.replace("trust-anchor/", "profile/")],
])
def test_an_input_that_fails_validation_is_reported_as_without_an_entry(
    bad: list[str], files: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = ["--certificate", files["leaf.pem"], "--private-key", files["leaf.key"], *ARNS, *DEAD_END]
    monkeypatch.setenv("RAH_CACHE_DIR", str(tmp_path / "cache"))
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    credentials = Credentials("ASIAHIT", "secret", "token", now + dt.timedelta(hours=1))
    _stored(tmp_path, _settings(good, {}, monkeypatch), credentials, now)
    assert _cli([*good, "--cache"], capsys) == (0, credentials.credential_process_json() + "\n", "")
    without = _cli([*good, *bad], capsys)
    assert without[0] == 2 and without[1] == ""
    assert _cli([*good, *bad, "--cache"], capsys) == without


def test_an_audit_log_is_still_opened_and_checked_at_start_on_a_hit(
    files: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    good = ["--certificate", files["leaf.pem"], *ARNS, *DEAD_END, "--cache"]
    monkeypatch.setenv("RAH_CACHE_DIR", str(tmp_path / "cache"))
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    credentials = Credentials("ASIAHIT", "secret", "token", now + dt.timedelta(hours=1))
    _stored(tmp_path, _settings(good, {}, monkeypatch), credentials, now)
    log = tmp_path / "audit.log"
    assert _cli([*good, "--audit-log", str(log)], capsys)[:2] == (0, credentials.credential_process_json() + "\n")
    assert log.exists()  # opened at start, as without a cache
    code, out, err = _cli([*good, "--audit-log", str(tmp_path / "missing" / "audit.log")], capsys)
    assert code == 2 and out == "" and "audit" in err


def test_a_hit_prints_what_the_json_path_prints_and_honours_the_margin(
    files: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--certificate", files["leaf.pem"], *ARNS, *DEAD_END, "--cache"]
    monkeypatch.setenv("RAH_CACHE_DIR", str(tmp_path / "cache"))
    settings = _settings(argv, {}, monkeypatch)
    cache = CredentialCache(tmp_path / "cache")
    key = hit_key(settings)
    assert key is not None
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    fresh = Credentials("ASIAFRESH", "s/e+c=r", "t" * 900, now + dt.timedelta(hours=1))
    _stored(tmp_path, settings, fresh, now)
    assert cache.hit_output(key) == fresh.credential_process_json()
    loaded = cache.load(key)
    assert loaded is not None and loaded.credential_process_json() == cache.hit_output(key)
    # 16 minutes of a one-hour session left: the margin, no hit on either path; a fetch follows
    epoch = now.timestamp()
    assert cache.hit_output(key, now=epoch + 44 * 60 - 1) is not None
    assert cache.hit_output(key, now=epoch + 44 * 60) is None
    late = Credentials("ASIALATE", "s", "t", now + dt.timedelta(minutes=15))
    _stored(tmp_path, settings, late, now - dt.timedelta(minutes=45))
    assert cache.hit_output(key) is None and cache.load(key) is None
    code, out, err = _cli(argv, capsys)
    assert code != 0 and out == "" and err  # it went on to fetch (with no usable key here)


def test_values_json_would_escape_are_left_to_the_json_path(tmp_path: Path) -> None:
    cache = CredentialCache(tmp_path / "cache")
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    for odd in ('quo"te', "back\\slash", "caf\u00e9", "tab\there"):
        credentials = Credentials("ASIAODD", odd, "token", now + dt.timedelta(hours=1))
        cache.store("k", credentials, issued_at=now, description="caf\u00e9 \\ \"x\"")
        assert cache.hit_output("k") is None
        loaded = cache.load("k")
        assert loaded is not None and loaded.secret_access_key == odd
    plain = Credentials("ASIAPLAIN", "secret", "token", now + dt.timedelta(hours=1))
    cache.store("k", plain, issued_at=now, description="caf\u00e9 \\ \"x\"\n")  # escapes it reads
    assert cache.hit_output("k") == plain.credential_process_json()


_TEXT = st.text(st.characters(), max_size=12)
_VALUES = st.recursive(st.one_of(_TEXT, st.integers(0, 10**30), st.booleans(), st.none(),
                                 st.floats(allow_nan=False)),
                       lambda inner: st.dictionaries(_TEXT, inner, max_size=4) | st.lists(inner, max_size=3),
                       max_leaves=12)


@given(st.dictionaries(_TEXT, _VALUES, max_size=5), st.booleans())
def test_the_small_reader_reads_what_json_reads_or_nothing(document: dict[str, Any], ascii_only: bool) -> None:
    data = json.dumps(document, separators=(",", ":"), ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    read = _plain_json(data)
    if read is not None:
        assert read == json.loads(data)


@given(st.binary(max_size=60) | st.text(alphabet='{}":,0123456789ab\\u .-e\x01', max_size=40).map(str.encode))
def test_anything_the_small_reader_takes_json_takes_alike(data: bytes) -> None:
    read = _plain_json(data)
    if read is not None:
        assert read == json.loads(data)


@given(st.dictionaries(st.text(st.characters(codec="ascii"), max_size=8),
                       st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
                       | st.integers(0, 10**6) | st.dictionaries(st.text(max_size=3), st.text(max_size=3),
                                                                    max_size=2), max_size=5))
def test_compact_objects_of_strings_and_integers_are_read(document: dict[str, Any]) -> None:
    for ascii_only in (True, False):
        assert _plain_json(json.dumps(document, separators=(",", ":"), ensure_ascii=ascii_only).encode()) == document


@given(st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59)))
def test_epoch_seconds_agrees_with_datetime(when: dt.datetime) -> None:
    aware = when.replace(microsecond=0, tzinfo=dt.timezone.utc)
    text = f"{aware.year:04d}-{aware:%m-%dT%H:%M:%S}Z"  # format_expiration's form, years < 1000 padded
    assert aware.year < 1000 or text == format_expiration(aware)
    assert dt.datetime.fromisoformat(text.replace("Z", "+00:00")) == aware  # parse_expiration's reading
    assert epoch_seconds(text) == (aware - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(seconds=1)


@pytest.mark.parametrize("text", ["2023-02-29T00:00:00Z", "2024-13-01T00:00:00Z", "2024-01-01T24:00:00Z",
                                  "2024-01-01T00:60:00Z", "2024-01-01T00:00:60Z", "0000-01-01T00:00:00Z",
                                  "2024-01-01T00:00:00+00:00", "2024-01-01 00:00:00Z", "2024-01-01T00:00:0\u0665Z",
                                  "2024-04-31T00:00:00Z", 1704067200, None])
def test_epoch_seconds_takes_no_other_form(text: object) -> None:
    assert epoch_seconds(text) is None
