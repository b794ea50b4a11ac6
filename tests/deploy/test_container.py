"""The container image and the Kubernetes manifests, for real: the image is built from this
worktree with deploy/container/build (once per session), run as its non-root user, also with a
read-only root filesystem, and the manifests of deploy/kubernetes are played with `podman kube
play --network none`: botocore in the application container gets credentials through the
container endpoint, IMDS and the shared credentials file, from a SoftHSM token directory of
the host and from a token the host exports with `p11-kit server`. See tests/deploy/podman.py
for what the harness changes so that podman 4.3 can play a manifest."""

from __future__ import annotations

import json
import re
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import rolesanywhere_hsm
from rolesanywhere_hsm._dev.devpki import CertificateAuthority, write_pem
from rolesanywhere_hsm.emulator import EmulatorConfig
from rolesanywhere_hsm._dev.softhsm import SoftHsmToken
from tests.deploy import podman as pm
from tests.fixtures.softhsm import SOFTHSM_PIN

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.softhsm]

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
P11_KIT_CLIENT = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"
TOKEN_MOUNT = "/run/rolesanywhere-hsm/token"  # where the manifests mount the node's token


@pytest.fixture(scope="session")
def image() -> str:
    """The image, built from this worktree. No podman: skipped, which RAH_REQUIRE_ALL_TOKENS=1
    (CI) turns into a failure; a runtime that cannot start fails the tests that run it."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (.ci/install-deps installs it)")
    seconds = pm.build_image()
    sys.stderr.write(f"\n[container] image built in {seconds:.0f} s\n")
    return pm.IMAGE


def run(image: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return pm.podman("run", "--rm", "--network", "none", *args, timeout=timeout, check=False)


def test_version_as_the_non_root_user_also_with_a_read_only_root(image: str) -> None:
    for extra in ([], ["--read-only"]):
        result = run(image, *extra, image, "--version")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == rolesanywhere_hsm.__version__
    who = run(image, "--entrypoint", "id", image)
    assert who.stdout.startswith("uid=10001(rah) gid=10001(rah)"), who.stdout + who.stderr
    # Read-only means read-only: only the state volume and the tmpfs podman adds are writable.
    probe = run(image, "--read-only", "--entrypoint", "sh", image, "-c",
                "touch /opt/x 2>/dev/null && echo root-writable; touch $HOME/x && echo state-writable")
    assert probe.stdout.split() == ["state-writable"], probe.stdout + probe.stderr


def test_demo_runs_inside_the_image_read_only(image: str) -> None:
    result = run(image, "--read-only", image, "demo", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "credential-process printed" in result.stdout + result.stderr
    assert '"AccessKeyId": "ASIA' in result.stdout + result.stderr


def test_the_image_holds_the_pkcs11_modules_and_tcti_libraries(image: str) -> None:
    paths = [SOFTHSM_MODULE, P11_KIT_CLIENT, "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so",
             "/usr/lib/x86_64-linux-gnu/pkcs11/opensc-pkcs11.so", "/usr/lib/x86_64-linux-gnu/libykcs11.so",
             "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so",
             "/usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0",
             "/usr/lib/x86_64-linux-gnu/libtss2-tcti-swtpm.so.0"]
    script = "; ".join(f"test -e {p} || echo missing {p}" for p in paths)
    result = run(image, "--entrypoint", "sh", image, "-c", f"{script}; python3 -c 'import tpm2_pytss, pkcs11'")
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr
    # Each loads and initialises as the image's user (SoftHSM2 needs its token directory: the
    # demo and the Kubernetes tests use it).
    for module in (P11_KIT_CLIENT, "/usr/lib/x86_64-linux-gnu/libykcs11.so",
                   "/usr/lib/x86_64-linux-gnu/pkcs11/opensc-pkcs11.so"):
        loaded = run(image, "--entrypoint", "python3", image, "-c",
                     f"import pkcs11; pkcs11.lib({module!r}); print('ok')")
        assert loaded.stdout.strip() == "ok", f"{module}: {loaded.stderr}"


# -- Kubernetes ---------------------------------------------------------------------------------


@dataclass
class World:
    """What a played pod needs from the host: the test files, the Secrets, the token."""

    base: Path
    test_dir: Path
    token_dir: Path
    secrets: dict[str, Path]
    config: dict[str, str]
    container_token: str


@pytest.fixture
def world(image: str, softhsm_template: SoftHsmToken, root_ca: CertificateAuthority,
          intermediate_ca: CertificateAuthority, tmp_path: Path) -> World:
    test_dir = tmp_path / "test"
    test_dir.mkdir()
    write_pem(test_dir / "root-ca.pem", root_ca.certificate)
    write_pem(test_dir / "chain.pem", intermediate_ca.certificate)
    shutil.copy(Path(__file__).with_name("app.py"), test_dir / "app.py")
    pm.copy_packages(test_dir / "site", ["botocore", "jmespath", "dateutil", "urllib3", "six"])
    for dirpath, dirs, files in os.walk(test_dir):
        os.chmod(dirpath, 0o755)
        for name in files:
            os.chmod(os.path.join(dirpath, name), 0o644)

    # The node's token: a SoftHSM token directory, readable and writable by the image's user.
    token_dir = tmp_path / "token"
    clone = softhsm_template.copy_to(token_dir)
    clone.conf.write_text(f"directories.tokendir = {TOKEN_MOUNT}/tokens\nobjectstore.backend = file\n"
                          "log.level = ERROR\n")
    pm.chown_tree(token_dir)

    container_token = secrets.token_urlsafe(32)
    emulator = EmulatorConfig.for_certificates([root_ca.certificate])  # the ARNs the pod's emulator derives
    config = {
        "RAH_TRUST_ANCHOR_ARN": emulator.trust_anchor_arn,
        "RAH_PROFILE_ARN": emulator.profile_arn,
        "RAH_ROLE_ARN": emulator.role_arn,
        "RAH_CERTIFICATE": f"{clone.uri_for('ec-p256', type='cert')}"
                           "?pin-source=file:/run/secrets/rolesanywhere-hsm-pin/pin",
        "RAH_INTERMEDIATES": "/run/test/chain.pem",
        "RAH_ENDPOINT": "http://127.0.0.1:8080",  # the emulator in the pod stands in for AWS
        "RAH_PKCS11_MODULE": SOFTHSM_MODULE,
        "SOFTHSM2_CONF": f"{TOKEN_MOUNT}/softhsm2.conf",
    }
    secret_dirs = {
        "pin": pm.secret_dir(tmp_path / "secrets", "pin", {"pin": SOFTHSM_PIN}),
        "container-token": pm.secret_dir(tmp_path / "secrets", "container-token", {"token": container_token}),
    }
    return World(tmp_path, test_dir, token_dir, secret_dirs, config, container_token)


def play_and_check(world: World, manifest: str, check: str, *, config: dict[str, str] | None = None,
                   token_dir: Path | None = None) -> tuple[list[dict[str, Any]], str]:
    """Play `manifest` (with its ConfigMap), wait for the application container, stop the
    pod (SIGTERM) and return the app's JSON lines and the rolesanywhere-hsm container's log."""
    docs = pm.load("config.yaml") + pm.load(manifest)
    app_env = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:9911/container/credentials",
               "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "/run/secrets/rolesanywhere-hsm-token/token"} \
        if check == "node-agent" else {}
    podded, pod = pm.for_podman(
        docs, config=config or world.config, secrets=world.secrets,
        host_paths={"token": token_dir or world.token_dir}, test_dir=world.test_dir,
        app_env=app_env, app_check=check)
    if check == "node-agent":  # the node's pods are other pods; here, one more container
        app = {"name": "app", "image": pm.IMAGE, "command": ["python3", "/run/test/app.py", check],
               "env": [{"name": "PYTHONPATH", "value": "/run/test/site"}]
               + [{"name": k, "value": v} for k, v in app_env.items()],
               "volumeMounts": [{"name": "test", "mountPath": "/run/test", "readOnly": True},
                                {"name": "container-token", "mountPath": "/run/secrets/rolesanywhere-hsm-token",
                                 "readOnly": True}]}
        podded[-1]["spec"]["containers"].append(app)
    with pm.played(podded, world.base / f"{pod}.yaml"):
        code = pm.wait_exit(f"{pod}-app", timeout=240)
        app_log = pm.logs(f"{pod}-app")
        sidecar = f"{pod}-rolesanywhere-hsm"
        pm.podman("stop", "--time", "20", sidecar, timeout=60)
        stopped = pm.podman("inspect", "--format", "{{.State.ExitCode}}", sidecar).stdout.strip()
        sidecar_log = pm.logs(sidecar)
        assert code == 0, f"app exited {code}:\n{app_log}\n--- {sidecar}:\n{sidecar_log}\n--- emulator:\n" \
                          f"{pm.logs(f'{pod}-emulator')}"
        assert stopped == "0", f"{sidecar} exited {stopped} on SIGTERM:\n{sidecar_log}"
    assert pm.podman("pod", "exists", pod, check=False).returncode != 0, "the pod was not torn down"
    results = [json.loads(line) for line in app_log.splitlines() if line.startswith("{")]
    return results, sidecar_log


def by_check(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["check"]: r for r in results}


def assert_credentials(result: dict[str, Any], method: str) -> None:
    assert result["method"] == method, result
    assert result["access_key_id"].startswith("ASIA") and result["has_secret"] and result["has_token"], result


def test_sidecar_serves_the_pod_through_the_container_endpoint_and_imds(world: World) -> None:
    results, log = play_and_check(world, "sidecar.yaml", "sidecar")
    checks = by_check(results)
    assert_credentials(checks["container"], "container-role")
    assert_credentials(checks["imds"], "iam-role")
    assert checks["no-token"]["status"] == 401
    assert SOFTHSM_PIN not in log and world.container_token not in log
    assert "rolesanywhere-hsm serve stopped" in log


def test_node_agent_serves_the_container_endpoint_only_with_its_token(world: World) -> None:
    results, log = play_and_check(world, "node-agent.yaml", "node-agent")
    checks = by_check(results)
    assert_credentials(checks["container"], "container-role")
    assert checks["no-token"]["status"] == 401
    assert checks["imds-token"]["status"] != 200  # --no-imds
    assert "export AWS_EC2_METADATA_SERVICE_ENDPOINT" not in log


def test_update_sidecar_keeps_a_shared_credentials_file(world: World) -> None:
    results, log = play_and_check(world, "update-sidecar.yaml", "file")
    assert_credentials(by_check(results)["file"], "shared-credentials-file")
    assert re.search(r"rolesanywhere-hsm update: wrote profile default in (/var)?/run/aws/credentials", log), log
    assert SOFTHSM_PIN not in log


@pytest.fixture
def p11_kit_socket(world: World) -> Iterator[Path]:
    """`p11-kit server` on the host exporting the SoftHSM token over a socket in a directory
    of its own: the directory mounted into the pod holds the socket and nothing else."""
    socket_dir = world.base / "p11-kit"
    socket_dir.mkdir()
    os.chmod(socket_dir, 0o755)
    host_conf = world.base / "host-softhsm2.conf"
    host_conf.write_text(f"directories.tokendir = {world.token_dir}/tokens\nobjectstore.backend = file\n"
                         "log.level = ERROR\n")
    process = subprocess.Popen(
        ["p11-kit", "server", "-f", "-n", str(socket_dir / "pkcs11.sock"), "--provider", SOFTHSM_MODULE, "pkcs11:token=rah-test"],
        env={**os.environ, "SOFTHSM2_CONF": str(host_conf)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (socket_dir / "pkcs11.sock").exists():
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, "p11-kit server did not create its socket"
        time.sleep(0.05)
    os.chown(socket_dir / "pkcs11.sock", pm.UID, pm.UID)  # -u/-g take names; the pod's user has none here
    os.chmod(socket_dir / "pkcs11.sock", 0o600)
    try:
        yield socket_dir
    finally:
        process.terminate()
        process.wait(10)


def test_sidecar_with_a_token_the_host_exports_through_p11_kit_server(world: World, p11_kit_socket: Path) -> None:
    config = dict(world.config, RAH_PKCS11_MODULE=P11_KIT_CLIENT,
                  P11_KIT_SERVER_ADDRESS=f"unix:path={TOKEN_MOUNT}/pkcs11.sock")
    del config["SOFTHSM2_CONF"]
    results, _log = play_and_check(world, "sidecar.yaml", "sidecar", config=config, token_dir=p11_kit_socket)
    assert_credentials(by_check(results)["container"], "container-role")
    assert [p.name for p in p11_kit_socket.iterdir()] == ["pkcs11.sock"]  # no key material in the pod
