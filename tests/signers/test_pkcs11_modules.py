"""Which modules `tokens` looks at: named ones first, p11-kit's registered ones (trust-policy
modules left out), the usual paths; each file once."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rolesanywhere_hsm.errors import ModuleLoadError
from rolesanywhere_hsm.signers.pkcs11.modules import known_module_paths


@pytest.fixture
def fake_module(tmp_path: Path) -> Path:
    """Any existing file stands for a module here: nothing is loaded."""
    path = tmp_path / "libvendor-pkcs11.so"
    path.write_bytes(b"\x7fELF")
    return path


def test_named_then_registered_then_usual_each_once(tmp_path: Path, fake_module: Path) -> None:
    config = tmp_path / "config" / "pkcs11" / "modules"
    config.mkdir(parents=True)
    (config / "vendor.module").write_text(f"module: {fake_module}\ncritical: no\n")
    (config / "trust.module").write_text(f"module: {fake_module.with_name('trust.so')}\ntrust-policy: yes\n")
    fake_module.with_name("trust.so").write_bytes(b"")
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path)}
    found = known_module_paths(None, environ)
    assert (str(fake_module), "registered with p11-kit") in found
    assert all(not path.endswith("trust.so") for path, _ in found)
    named = known_module_paths(str(fake_module), environ)
    assert named[0] == (str(fake_module), "--pkcs11-lib")
    assert [p for p, _ in named].count(str(fake_module)) == 1  # once, as the user named it
    paths = [os.path.realpath(p) for p, _ in named]
    assert len(paths) == len(set(paths))


def test_a_named_module_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ModuleLoadError, match="does not exist"):
        known_module_paths(str(tmp_path / "missing.so"), {})
    with pytest.raises(ModuleLoadError, match="not found"):
        known_module_paths(None, {"RAH_PKCS11_MODULE": "no-such-module-name"})


@pytest.mark.skipif(shutil.which("softhsm2-util") is None, reason="SoftHSM2 is not installed")
def test_softhsm_is_found_at_its_usual_path() -> None:
    found = [os.path.realpath(p) for p, _ in known_module_paths(None, {})]
    assert any(p.endswith("libsofthsm2.so") for p in found)


def test_module_name_is_matched_case_insensitively(tmp_path: Path, fake_module: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 7512 section 2.3: module-name is the file name without prefix and suffix, and
    compared without regard to case; the exact file name still wins in its directory."""
    from rolesanywhere_hsm.signers.pkcs11 import modules
    from rolesanywhere_hsm.signers.pkcs11_uri import parse_pkcs11_uri

    monkeypatch.setattr(modules, "MODULE_DIRS", (str(tmp_path),))
    for name in ("Vendor-PKCS11", "vendor-pkcs11", "LIBVENDOR-PKCS11.SO", "libvendor-pkcs11.so"):
        assert modules.find_module_by_name(name) == str(fake_module), name
    assert modules.find_module_by_name("vendor") is None
    uri = parse_pkcs11_uri("pkcs11:token=t?module-name=Vendor-Pkcs11")
    assert modules.resolve_module_path((uri,), None, {}) == str(fake_module)
    exact = tmp_path / "Vendor-PKCS11.so"
    exact.write_bytes(b"\x7fELF")
    assert modules.find_module_by_name("Vendor-PKCS11") == str(exact)


def test_a_typo_in_rah_pkcs11_module_is_blamed_on_the_variable_not_the_flag(tmp_path: Path) -> None:
    """The option table hands RAH_PKCS11_MODULE's value over as --pkcs11-lib's."""
    import subprocess
    import sys

    from rolesanywhere_hsm.signers.pkcs11.modules import resolve_module_path

    typo = str(tmp_path / "libsofthsm.so")
    with pytest.raises(ModuleLoadError, match=r"\(from RAH_PKCS11_MODULE\)"):
        resolve_module_path((None,), typo, {"RAH_PKCS11_MODULE": typo})
    with pytest.raises(ModuleLoadError, match=r"\(from --pkcs11-lib\)"):
        resolve_module_path((None,), typo, {"RAH_PKCS11_MODULE": "/usr/lib/other.so"})
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
           "RAH_PKCS11_MODULE": typo}
    result = subprocess.run([sys.executable, "-m", "rolesanywhere_hsm", "sign-string", "--certificate",
                             "pkcs11:token=t;object=k"], capture_output=True, text=True, env=env, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 4 and "(from RAH_PKCS11_MODULE)" in result.stderr, result.stderr
    assert "--pkcs11-lib)" not in result.stderr


def test_no_token_hint_fits_the_module() -> None:
    from rolesanywhere_hsm.signers.pkcs11.selection import no_token_hint

    client = no_token_hint("/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so")
    assert "p11-kit server" in client and "P11_KIT_SERVER_ADDRESS" in client and "SoftHSM" not in client
    assert "SOFTHSM2_CONF" in no_token_hint("/usr/lib/softhsm/libsofthsm2.so")
    assert "tokens" in no_token_hint("/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so")
    assert "TPM2_PKCS11_STORE" in no_token_hint("/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so")
    assert "pcscd" in no_token_hint("/usr/lib/x86_64-linux-gnu/libykcs11.so")


def test_a_p11_kit_client_with_no_server_gets_a_p11_kit_hint(tmp_path: Path) -> None:
    import subprocess
    import sys

    client = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"
    if not Path(client).exists():
        pytest.skip("needs p11-kit-modules (p11-kit-client.so)")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
           "P11_KIT_SERVER_ADDRESS": f"unix:path={tmp_path}/no-server.sock"}
    result = subprocess.run([sys.executable, "-m", "rolesanywhere_hsm", "sign-string", "--certificate",
                             f"pkcs11:token=rah?module-path={client}"], capture_output=True, text=True,
                            env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 4, result.stderr
    assert "p11-kit server" in result.stderr and "SOFTHSM2_CONF" not in result.stderr, result.stderr
