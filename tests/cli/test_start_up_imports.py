"""What `credential-process` imports on its cold path: with no proxy in the way, no httpx,
httpcore, h11 or certifi at all (the standard-library path, rolesanywhere_hsm.directhttp);
through a proxy, httpx without its command-line tool and httpcore without its async back ends
(cli.fast.import_http_client), and only in our own process; a library user's program keeps all
of httpx. Each check runs in a fresh interpreter, since an
import can be seen only once per process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rolesanywhere_hsm._dev.devpki import CertificateAuthority
from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig

ROOT = Path(__file__).parents[2]
# Never needed to send one request: httpx's CLI and what it pulls, httpcore's async back ends.
UNNEEDED = {"httpx._main", "click", "rich", "pygments", "trio", "anyio"}
# What a direct (no proxy) cold run never loads.
HTTPX_AND_CO = {"httpx", "httpcore", "h11", "certifi"}
_REPORT = ("print('IMPORTED', ' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
           "{'click', 'rich', 'pygments', 'trio', 'anyio', 'httpx', 'httpcore'} and "
           "(m == 'httpx._main' or m.split('.')[0] not in ('httpx', 'httpcore')) or m == 'httpx'))"
           ", file=sys.stderr)")


def python(code: str, *args: str, env: dict[str, str] | None = None,
           flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *flags, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                          env=env or dict(os.environ), timeout=120, stdin=subprocess.DEVNULL)


def reported(result: subprocess.CompletedProcess[str]) -> set[str]:
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("IMPORTED")]
    return set(line.split()[1:])


@pytest.fixture
def server(root_ca: CertificateAuthority) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig.for_certificates([root_ca.certificate])) as emulator:
        yield emulator


def test_a_cold_credential_process_through_a_proxy_sends_with_httpx_but_without_its_cli_or_async_back_ends(
    server: Emulator, leaf_files: dict[str, Any],
) -> None:
    from tests.client.test_proxy import ForwardingProxy

    files = leaf_files["p256"]
    code = ("import atexit, sys\natexit.register(lambda: " + _REPORT + ")\n"
            "sys.argv = ['rolesanywhere-hsm', *sys.argv[1:]]\n"
            "from rolesanywhere_hsm.cli import main\nmain()\n")
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and not k.startswith("AWS_")}
    proxy = ForwardingProxy()
    thread = __import__("threading").Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        env["HTTP_PROXY"] = f"http://127.0.0.1:{proxy.server_address[1]}"
        result = python(code, "credential-process", "--certificate", str(files.certificate),
                        "--private-key", str(files.key), "--trust-anchor-arn", server.trust_anchor_arn,
                        "--profile-arn", server.profile_arn, "--role-arn", server.role_arn,
                        "--endpoint", server.url, env=env)
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert result.returncode == 0, result.stderr
    assert '"AccessKeyId"' in result.stdout
    assert len(proxy.forwarded) == 1
    imported = reported(result)
    assert "httpx" in imported  # the request did go through httpx
    assert not imported & UNNEEDED


def test_a_cold_credential_process_without_a_proxy_loads_no_httpx(
    server: Emulator, leaf_files: dict[str, Any],
) -> None:
    files = leaf_files["p256"]
    code = ("import atexit, sys\natexit.register(lambda: " + _ALL_MODULES + ")\n"
            "sys.argv = ['rolesanywhere-hsm', *sys.argv[1:]]\n"
            "from rolesanywhere_hsm.cli import main\nmain()\n")
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and not k.startswith("AWS_")}
    result = python(code, "credential-process", "--certificate", str(files.certificate),
                    "--private-key", str(files.key), "--trust-anchor-arn", server.trust_anchor_arn,
                    "--profile-arn", server.profile_arn, "--role-arn", server.role_arn,
                    "--endpoint", server.url, env=env)
    assert result.returncode == 0, result.stderr
    assert len(server.issued) == 1
    assert "rolesanywhere_hsm.directhttp" in reported(result)  # it did send (so the pin can fail)
    imported = {m.split(".")[0] for m in reported(result) - _bare(env)}
    assert not imported & HTTPX_AND_CO, sorted(imported & HTTPX_AND_CO)


def _bare(env: dict[str, str]) -> set[str]:
    """What the interpreter loads before any code of ours (a site .pth file may load certifi)."""
    return reported(python("import sys\n" + _ALL_MODULES, env=env))


def test_the_modules_held_back_import_normally_afterwards() -> None:
    result = python(
        "import sys\nfrom rolesanywhere_hsm.cli.fast import import_http_client\nimport_http_client()\n"
        "import httpcore._synchronization as sync\n"
        "assert sync.anyio is None and 'anyio' not in sys.modules, 'anyio was loaded or left blocked'\n"
        "import anyio\nprint('anyio', anyio.__name__)\n" + _REPORT + "\n")
    assert result.returncode == 0, result.stderr
    assert "anyio anyio" in result.stdout
    assert not reported(result) & (UNNEEDED - {"anyio"})


def test_a_held_back_module_that_httpx_needs_after_all_is_imported_on_a_second_try() -> None:
    """A later httpx might import one of them without a fallback: the client is imported again
    with nothing held back (h11 stands in: httpcore cannot load without it)."""
    result = python(
        "import sys\nfrom rolesanywhere_hsm.cli.fast import import_http_client\n"
        "import_http_client(('h11',))\nimport rolesanywhere_hsm.httpxpath as c, h11\n"
        "print('ok', sys.modules['h11'] is h11, c.httpx.Client.__name__)\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok True Client"


def test_the_library_keeps_httpx_whole() -> None:
    """Outside our own CLI process nothing is held back: a user's program may run httpx async."""
    result = python("import rolesanywhere_hsm.client, httpcore._synchronization as sync\n"
                    "print(sync.anyio is not None)\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


# What a `credential-process --cache` hit may not import (issue 21 item 1): the standard-library
# modules that cost more than the hit's own work (dataclasses pulls inspect, ast, dis and
# tokenize; hashlib pulls OpenSSL's _hashlib; json pulls re, and re pulls enum), logging unless
# --debug asks, everything heavy, and our modules that validate a source (a hit computes the key
# without them: rolesanywhere_hsm.cachekey) or read an entry with json and datetime.
NOT_ON_A_HIT = {"dataclasses", "inspect", "ast", "dis", "tokenize", "typing", "pathlib", "logging",
                "_hashlib", "tempfile", "contextlib", "fcntl", "httpx", "httpcore", "h11", "cryptography",
                "asn1crypto", "pkcs11", "typer", "click", "rich", "certifi", "ssl", "urllib.parse",
                "ipaddress", "re", "enum", "json", "datetime", "_datetime", "rolesanywhere_hsm.spec",
                "rolesanywhere_hsm.arn", "rolesanywhere_hsm.credentials", "rolesanywhere_hsm.deadline",
                "rolesanywhere_hsm.files"}
# The hit is probed with `python -S`: no site-packages and no .pth file of an editable install,
# which in a development environment load re, typing and pathlib before any code of ours (a
# hit needs nothing outside the standard library and this checkout, so it runs the same).
HIT_FLAGS = ("-S",)
_ALL_MODULES = "print('IMPORTED', ' '.join(sorted(sys.modules)), file=sys.stderr)"


def _hit(args: list[str], env: dict[str, str], flags: tuple[str, ...] = ()) -> set[str]:
    code = ("import atexit, sys\natexit.register(lambda: " + _ALL_MODULES + ")\n"
            "sys.argv = ['rolesanywhere-hsm', *sys.argv[1:]]\n"
            "from rolesanywhere_hsm.cli import main\nmain()\n")
    result = python(code, *args, env=env, flags=flags)
    assert result.returncode == 0, result.stderr
    assert '"AccessKeyId"' in result.stdout
    return reported(result)


def test_a_cache_hit_imports_only_what_a_hit_needs(
    server: Emulator, leaf_files: dict[str, Any], tmp_path: Path,
) -> None:
    files = leaf_files["p256"]
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and not k.startswith("AWS_")}
    env["RAH_CACHE_DIR"] = str(tmp_path / "cache")
    args = ["credential-process", "--cache", "--certificate", str(files.certificate), "--private-key",
            str(files.key), "--trust-anchor-arn", server.trust_anchor_arn, "--profile-arn", server.profile_arn,
            "--role-arn", server.role_arn, "--endpoint", server.url]
    cold = _hit(args, env)
    assert "rolesanywhere_hsm.directhttp" in cold  # the first run fetched
    hit = _hit(args, env, HIT_FLAGS)
    assert len(server.issued) == 1, "the second run was not a hit"
    # what the interpreter loads before any code of ours is not the hit's doing
    bare = reported(python("import sys\n" + _ALL_MODULES, env=env, flags=HIT_FLAGS))
    assert not bare & {"re", "enum", "json", "datetime", "typing", "pathlib"}  # so the pin can fail
    ours = hit - bare
    assert not ours & NOT_ON_A_HIT, sorted(ours & NOT_ON_A_HIT)
    assert {"rolesanywhere_hsm.cache", "rolesanywhere_hsm.cachekey"} <= ours
    assert len([m for m in ours if m.startswith("rolesanywhere_hsm")]) <= 12, sorted(ours)
    debug = _hit([*args, "--debug"], env, HIT_FLAGS)
    assert "logging" in debug  # --debug does log (and so the pin above can fail)
    assert len(server.issued) == 1


@pytest.mark.softhsm
def test_a_cold_run_on_a_token_holding_the_leaf_alone_never_imports_cryptography(
    softhsm_factory: Any, softhsm_module: str, intermediate_ca: CertificateAuthority,
) -> None:
    """Issue 21 item 2: certificates on the token path are parsed with asn1crypto;
    cryptography is loaded only to verify a candidate issuer on the token, and this token has
    none."""
    from tests.fixtures.softhsm import SOFTHSM_PIN

    token = softhsm_factory("lean", [("p256", "leaf", b"\x01")])
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and not k.startswith("AWS_")}
    env.update(token.env, RAH_PKCS11_MODULE=softhsm_module, RAH_PKCS11_PIN=SOFTHSM_PIN)
    with Emulator(EmulatorConfig.for_certificates([intermediate_ca.certificate])) as emulator:
        code = ("import atexit, sys\natexit.register(lambda: " + _ALL_MODULES + ")\n"
                "sys.argv = ['rolesanywhere-hsm', *sys.argv[1:]]\n"
                "from rolesanywhere_hsm.cli import main\nmain()\n")
        result = python(code, "credential-process", "--certificate", token.uri_for("leaf", type="cert"),
                        "--trust-anchor-arn", emulator.trust_anchor_arn, "--profile-arn", emulator.profile_arn,
                        "--role-arn", emulator.role_arn, "--endpoint", emulator.url, env=env)
        assert result.returncode == 0, result.stderr
        assert len(emulator.issued) == 1
        debug = python(code, "credential-process", "--debug",
                       "--certificate", token.uri_for("leaf", type="cert"), "--trust-anchor-arn",
                       emulator.trust_anchor_arn, "--profile-arn", emulator.profile_arn, "--role-arn",
                       emulator.role_arn, "--endpoint", emulator.url, env=env)
        assert debug.returncode == 0, debug.stderr
        assert "logging" in reported(debug)  # --debug does log (and so the pin above can fail)
        assert "rolesanywhere-hsm: rolesanywhere_hsm.pkcs11:" in debug.stderr
    imported = reported(result)
    assert {"pkcs11", "asn1crypto"} <= {m.split(".")[0] for m in imported}
    assert "rolesanywhere_hsm.directhttp" in imported  # it sent, with the standard library
    # No proxy in the way: none of httpx, httpcore, h11, certifi (issue 21, the HTTP path).
    assert not {m.split(".")[0] for m in imported - _bare(env)} & HTTPX_AND_CO
    assert not {m for m in imported if m.split(".")[0] == "cryptography"}
    # Nor what only an error message or a size constant needed (pkcs11_uri: difflib suggests a
    # name, struct gives CK_ULONG's size), nor HTTP/2 or the decoders of encodings we refuse.
    assert not imported & {"ctypes", "difflib", "h2", "brotli", "zstandard"}, sorted(
        imported & {"ctypes", "difflib", "h2", "brotli", "zstandard"})
    # Issue 21, the token path: no dataclasses (the signer's value classes are Records), no
    # logging without --debug (lazylog), no subprocess, tempfile, shutil or pathlib (a PIN
    # from the environment runs no command and reads no file), none of what those pull in.
    not_on_the_token_path = {"dataclasses", "logging", "traceback", "subprocess", "shlex", "tempfile",
                             "shutil", "bz2", "lzma", "pathlib"}
    assert not (imported - _bare(env)) & not_on_the_token_path, sorted(
        (imported - _bare(env)) & not_on_the_token_path)

