"""Every client test that sends runs on both HTTP paths: `direct` (the standard library, chosen
when no proxy applies: HTTP_CLIENT "auto") and `httpx` (HTTP_CLIENT "httpx"). The fixture also
checks which path each client took: on `httpx` always httpx; on `direct`, httpx only where a
proxy applies (as rolesanywhere_hsm.proxyenv decided), so a test cannot pass on `direct` by
quietly going through httpx."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rolesanywhere_hsm import client as client_module

# The modules whose tests make clients; the others (pure checks, CLI runs) need no second run.
_BOTH_PATHS = {"test_create_session", "test_deadline", "test_tls_context"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.rpartition(".")[2] in _BOTH_PATHS and "http_path" in metafunc.fixturenames:
        metafunc.parametrize("http_path", ["direct", "httpx"], indirect=True)


@pytest.fixture(autouse=True)
def http_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    path = getattr(request, "param", "direct")
    monkeypatch.setattr(client_module, "HTTP_CLIENT", "auto" if path == "direct" else "httpx")
    made: list[tuple[str, bool]] = []  # (path taken, whether a proxy applied)
    real_init = client_module.RolesAnywhereClient.__init__
    real_direct = client_module._direct_path
    decided: list[bool] = []

    def direct_path(*args: object, **kwargs: object) -> object:
        chosen = real_direct(*args, **kwargs)  # type: ignore[arg-type]
        decided.append(chosen is not None)
        return chosen

    def init(self: client_module.RolesAnywhereClient, *args: object, **kwargs: object) -> None:
        decided.clear()
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]
        if kwargs.get("http_client") is None:  # a test that names its path is checked by itself
            made.append((self.http_client, bool(decided) and not decided[0]))

    monkeypatch.setattr(client_module, "_direct_path", direct_path)
    monkeypatch.setattr(client_module.RolesAnywhereClient, "__init__", init)
    yield path
    for taken, proxied in made:
        if path == "httpx":
            assert taken == "httpx"
        elif not proxied:
            assert taken == "direct", "a client with no proxy in its way did not take the direct path"
