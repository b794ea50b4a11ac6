"""A tiny credential holder with `current()` and a fake clock, and `serve`'s application on a
real loopback HTTP server, for testing the servers without a token or an emulator."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from rolesanywhere_hsm.credentials import Credentials
from rolesanywhere_hsm.errors import CredentialsUnavailableError
from rolesanywhere_hsm.httpserver import HttpServer
from rolesanywhere_hsm.servers.app import ServeApp
from rolesanywhere_hsm.servers.imds import ImdsTokens

ROLE_ARN = "arn:aws:iam::111122223333:role/path/serve-role"
CONTAINER_TOKEN = "test-container-token-0123456789"


def make_credentials(seconds: float = 3600, now: dt.datetime | None = None, **changes: Any) -> Credentials:
    now = now or dt.datetime.now(dt.timezone.utc)
    values: dict[str, Any] = {
        "access_key_id": "ASIA" + secrets.token_hex(8).upper(),
        "secret_access_key": secrets.token_urlsafe(30),
        "session_token": secrets.token_urlsafe(60),
        "expiration": (now + dt.timedelta(seconds=seconds)).replace(microsecond=0),
        "role_arn": ROLE_ARN,
    }
    values.update(changes)
    return Credentials(**values)


@dataclass
class Holder:
    """`current()` as the refresh engine offers it: the held credentials, or
    CredentialsUnavailableError."""

    credentials: Credentials | None = None
    calls: int = 0

    def current(self) -> Credentials:
        self.calls += 1
        if self.credentials is None:
            raise CredentialsUnavailableError("no valid credentials now (test holder)")
        return self.credentials


@dataclass
class FakeClock:
    now: float = 1_000_000.0
    shifts: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Running:
    server: HttpServer
    app: ServeApp
    holder: Holder
    monotonic: FakeClock | None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


@pytest.fixture
def serve_app() -> Iterator[Callable[..., Running]]:
    started: list[HttpServer] = []

    def start(holder: Holder | None = None, *, fake_clock: bool = False, **kwargs: Any) -> Running:
        holder = holder or Holder(make_credentials())
        clock = FakeClock() if fake_clock else None
        kwargs.setdefault("container_token", CONTAINER_TOKEN)
        if clock is not None:
            kwargs["tokens"] = ImdsTokens(clock=clock)
        app = ServeApp(holder, role_name="serve-role", **kwargs)
        server = HttpServer(app).start_in_thread()
        started.append(server)
        return Running(server, app, holder, clock)

    yield start
    for server in started:
        server.stop()
