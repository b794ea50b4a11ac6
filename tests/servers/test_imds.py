"""IMDSv2 as the SDKs use it: token PUT with a TTL, GETs with the token, the role listing and the
credentials document; refusals (bad TTL, no or expired token, X-Forwarded-For, wrong method);
503 and never an unusable credential; botocore's own IMDS provider as the client."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from rolesanywhere_hsm.servers.imds import CREDENTIALS_PATH, ImdsTokens, role_name_of
from tests.servers.conftest import Holder, Running, make_credentials

ROLE_URL = CREDENTIALS_PATH + "serve-role"


def token(client: httpx.Client, ttl: str = "60") -> str:
    response = client.put("/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": ttl})
    assert response.status_code == 200, response.text
    assert response.headers["x-aws-ec2-metadata-token-ttl-seconds"] == ttl
    return response.text


def test_token_then_listing_then_document(serve_app: Callable[..., Running]) -> None:
    running = serve_app()
    with httpx.Client(base_url=running.url) as client:
        headers = {"X-aws-ec2-metadata-token": token(client)}
        listing = client.get(CREDENTIALS_PATH, headers=headers)
        document = client.get(ROLE_URL, headers=headers)

    assert listing.status_code == 200 and listing.text == "serve-role"
    assert document.status_code == 200
    body = document.json()
    held = running.holder.credentials
    assert held is not None
    assert list(body) == ["Code", "LastUpdated", "Type", "AccessKeyId", "SecretAccessKey", "Token", "Expiration"]
    assert (body["Code"], body["Type"]) == ("Success", "AWS-HMAC")
    assert (body["AccessKeyId"], body["SecretAccessKey"], body["Token"]) == (
        held.access_key_id, held.secret_access_key, held.session_token)
    assert body["Expiration"] == held.expiration.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert body["LastUpdated"].endswith("Z")


@pytest.mark.parametrize("ttl", ["0", "21601", "-1", "abc", "", "1.5", "99999999999999999999", "٣"])
def test_a_ttl_outside_1_to_21600_is_400(ttl: str, serve_app: Callable[..., Running]) -> None:
    running = serve_app()
    response = httpx.put(running.url + "/latest/api/token",
                         headers={"X-aws-ec2-metadata-token-ttl-seconds": ttl.encode()})
    assert response.status_code == 400


def test_a_missing_ttl_is_400_and_the_bounds_are_accepted(serve_app: Callable[..., Running]) -> None:
    running = serve_app()
    with httpx.Client(base_url=running.url) as client:
        assert client.put("/latest/api/token").status_code == 400
        token(client, "1")
        token(client, "21600")


@pytest.mark.parametrize("headers", [{}, {"X-aws-ec2-metadata-token": "nonsense"},
                                     {"X-aws-ec2-metadata-token": "7fffffffffff.AAAA"}, "twice"])
def test_gets_without_a_valid_token_are_401(headers: Any, serve_app: Callable[..., Running]) -> None:
    running = serve_app()
    if headers == "twice":  # a valid token sent twice is not one token
        valid = running.app.imds._tokens.issue(60)  # type: ignore[union-attr]
        headers = [("X-aws-ec2-metadata-token", valid)] * 2
    for path in (CREDENTIALS_PATH, ROLE_URL, "/latest/meta-data/"):
        assert httpx.get(running.url + path, headers=headers).status_code == 401


def test_a_token_from_another_server_is_401(serve_app: Callable[..., Running]) -> None:
    first, second = serve_app(), serve_app()
    with httpx.Client(base_url=first.url) as client:
        foreign = token(client)
    assert httpx.get(second.url + ROLE_URL, headers={"X-aws-ec2-metadata-token": foreign}).status_code == 401


def test_tokens_expire(serve_app: Callable[..., Running]) -> None:
    running = serve_app(fake_clock=True)
    assert running.monotonic is not None
    with httpx.Client(base_url=running.url) as client:
        headers = {"X-aws-ec2-metadata-token": token(client, "10")}
        assert client.get(ROLE_URL, headers=headers).status_code == 200
        running.monotonic.advance(9.9)
        assert client.get(ROLE_URL, headers=headers).status_code == 200
        running.monotonic.advance(0.2)
        assert client.get(ROLE_URL, headers=headers).status_code == 401


def test_x_forwarded_for_is_400(serve_app: Callable[..., Running]) -> None:
    running = serve_app()
    with httpx.Client(base_url=running.url) as client:
        good = token(client)
        assert client.put("/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60",
                                                        "X-Forwarded-For": "10.0.0.1"}).status_code == 400
        assert client.get(ROLE_URL, headers={"X-aws-ec2-metadata-token": good,
                                             "X-Forwarded-For": "10.0.0.1"}).status_code == 400


def test_wrong_methods_and_unknown_paths(serve_app: Callable[..., Running]) -> None:
    running = serve_app()
    with httpx.Client(base_url=running.url) as client:
        headers = {"X-aws-ec2-metadata-token": token(client)}
        assert client.get("/latest/api/token").status_code == 405
        assert client.post(ROLE_URL, headers=headers).status_code == 405
        assert client.get(CREDENTIALS_PATH + "other-role", headers=headers).status_code == 404
        assert client.get("/latest/meta-data/ami-id", headers=headers).status_code == 404
        assert client.get("/nothing").status_code == 404
        two = [("X-aws-ec2-metadata-token", headers["X-aws-ec2-metadata-token"])] * 2
        assert client.get(ROLE_URL, headers=two).status_code == 401


def test_503_when_the_source_has_nothing_and_never_an_unusable_credential(serve_app: Callable[..., Running]) -> None:
    holder = Holder(None)
    running = serve_app(holder)
    with httpx.Client(base_url=running.url) as client:
        headers = {"X-aws-ec2-metadata-token": token(client)}
        unavailable = client.get(ROLE_URL, headers=headers)
        assert unavailable.status_code == 503
        assert unavailable.json()["Code"] == "CredentialsUnavailable"
        # A source that misbehaves (expired or empty values) is refused here too.
        holder.credentials = make_credentials(-5)
        assert client.get(ROLE_URL, headers=headers).status_code == 503
        holder.credentials = make_credentials(3600, session_token="")
        assert client.get(ROLE_URL, headers=headers).status_code == 503
        holder.credentials = make_credentials(3600)
        assert client.get(ROLE_URL, headers=headers).json()["AccessKeyId"] == holder.credentials.access_key_id


def test_a_cached_document_is_refused_once_its_credentials_expire(serve_app: Callable[..., Running]) -> None:
    clock = {"now": dt.datetime.now(dt.timezone.utc).timestamp()}
    running = serve_app(wall_clock=lambda: clock["now"])
    with httpx.Client(base_url=running.url) as client:
        headers = {"X-aws-ec2-metadata-token": token(client)}
        assert client.get(ROLE_URL, headers=headers).status_code == 200
        clock["now"] += 3601
        assert client.get(ROLE_URL, headers=headers).status_code == 503


def test_token_format_is_checked_in_full() -> None:
    tokens = ImdsTokens(clock=lambda: 100.0, key=b"k" * 32)
    good = tokens.issue(60)
    assert tokens.valid(good)
    payload, mac = good.split(".")
    assert not tokens.valid(f"{int(payload, 16) + 1:x}.{mac}")  # a longer life is not forgeable
    assert not tokens.valid(good + "x")
    assert not tokens.valid("")
    assert not tokens.valid("x" * 200)
    assert not ImdsTokens(clock=lambda: 100.0, key=b"j" * 32).valid(good)


def test_role_name_of() -> None:
    assert role_name_of("arn:aws:iam::111122223333:role/path/to/name") == "name"
    assert role_name_of("arn:aws:iam::111122223333:role/name") == "name"


def test_botocore_imds_provider_gets_the_credentials(serve_app: Callable[..., Running], monkeypatch: Any) -> None:
    import botocore.session

    running = serve_app()
    for name in list(__import__("os").environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", running.url + "/")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")

    session = botocore.session.Session()
    credentials = session.get_credentials()

    assert credentials is not None and credentials.method == "iam-role"
    frozen = credentials.get_frozen_credentials()
    held = running.holder.credentials
    assert held is not None
    assert (frozen.access_key, frozen.secret_key, frozen.token) == (
        held.access_key_id, held.secret_access_key, held.session_token)
    json.dumps(frozen)  # plain values
