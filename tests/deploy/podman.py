"""Test harness for the image and the Kubernetes manifests under deploy/: podman, run for real.

This machine kind's podman quirk (runc, cgroupfs, no default ulimits) lives in
.ci/containers.conf and is passed with CONTAINERS_CONF here and in CI only, never in the
user-facing script or docs.

`podman kube play` (4.3 on Debian 12) plays Pods and Deployments but not everything a cluster
does, so `for_podman` turns a shipped manifest into what it can play, changing only what
podman lacks and what the test stands in for:
- a DaemonSet or Deployment becomes a Pod of its template (4.3 ignores DaemonSets);
- native sidecars (init containers with `restartPolicy: Always`) become ordinary containers,
  started first; probes are dropped (4.3 turns them into systemd timers, absent here): the
  application script waits for /readyz itself, as the startup probe would have it wait;
- `secret` volumes become host directories holding the same files (4.3's secret volumes
  ignore defaultMode and may serve stale data), `hostNetwork` goes (the pod runs with
  `--network none`: every packet stays on its loopback), and the node agent listens on the
  pod's loopback instead of the node's link-local address;
- the test's own containers join the pod: the emulator (standing in for AWS) and the
  application (botocore, checking what it gets).
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parents[2]
IMAGE = "localhost/rolesanywhere-hsm:latest"
CONTAINERS_CONF = ROOT / ".ci" / "containers.conf"
CACHE = Path(os.environ.get("RAH_CONTAINER_CACHE", "/var/tmp/rolesanywhere-hsm-test-cache"))
UID = 10001  # the image's user


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return env


def podman(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], env=podman_env(), capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def build_image() -> float:
    """Build the image from this worktree with the shipped script; the seconds it took. The
    Debian base tarball is kept between runs, keyed by the date (Debian's archive moves on)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    for old in CACHE.glob("debian-bookworm-*.tar"):
        if old.name != f"debian-bookworm-{dt.date.today():%Y%m%d}.tar":
            old.unlink(missing_ok=True)
    env = podman_env()
    env["RAH_BASE_TARBALL"] = str(CACHE / f"debian-bookworm-{dt.date.today():%Y%m%d}.tar")
    env["PYTHON"] = os.environ.get("PYTHON", "python3")
    start = time.monotonic()
    result = subprocess.run(["bash", str(ROOT / "deploy" / "container" / "build")], env=env,
                            capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise AssertionError(f"deploy/container/build failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.monotonic() - start


def load(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / name).read_text()) if doc]


def for_podman(docs: list[dict[str, Any]], *, config: dict[str, str], secrets: dict[str, Path],
               host_paths: dict[str, Path], test_dir: Path, app_env: dict[str, str],
               app_check: str) -> tuple[list[dict[str, Any]], str]:
    """The manifest as podman 4.3 can play it (see the module docstring); also the pod name."""
    out: list[dict[str, Any]] = []
    pod_name = ""
    for original in docs:
        doc = copy.deepcopy(original)
        if doc["kind"] == "ConfigMap":
            doc["data"] = dict(config)
            out.append(doc)
            continue
        if doc["kind"] not in ("Deployment", "DaemonSet", "Pod"):
            raise AssertionError(f"unexpected kind {doc['kind']}")
        spec = doc["spec"]["template"]["spec"] if doc["kind"] != "Pod" else doc["spec"]
        pod_name = doc["metadata"]["name"]
        spec.pop("hostNetwork", None)
        sidecars = [c for c in spec.pop("initContainers", []) if c.get("restartPolicy") == "Always"]
        containers = sidecars + spec["containers"]
        for container in containers:
            container.pop("restartPolicy", None)
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                container.pop(probe, None)
            if container["name"] == "app":
                container["image"] = IMAGE
                container["command"] = ["python3", "/run/test/app.py", app_check]
                container.setdefault("env", []).extend(
                    [{"name": "PYTHONPATH", "value": "/run/test/site"}]
                    + [{"name": k, "value": v} for k, v in app_env.items()])
                container.setdefault("volumeMounts", []).append(
                    {"name": "test", "mountPath": "/run/test", "readOnly": True})
            else:
                container["image"] = IMAGE
                container.setdefault("volumeMounts", []).append(  # the chain of the test CA
                    {"name": "test", "mountPath": "/run/test", "readOnly": True})
                container["args"] = ["127.0.0.1" if a == "169.254.170.23" else a for a in container["args"]]
        emulator = {
            "name": "emulator", "image": IMAGE,
            "args": ["emulator", "--ca", "/run/test/root-ca.pem", "--host", "127.0.0.1", "--port", "8080"],
            "volumeMounts": [{"name": "test", "mountPath": "/run/test", "readOnly": True}],
        }
        spec["containers"] = [emulator, *containers]
        for volume in spec["volumes"]:
            if "secret" in volume:
                volume.pop("secret")
                volume["hostPath"] = {"path": str(secrets[volume["name"]]), "type": "Directory"}
            elif "hostPath" in volume:
                volume["hostPath"]["path"] = str(host_paths[volume["name"]])
        spec["volumes"].append({"name": "test", "hostPath": {"path": str(test_dir), "type": "Directory"}})
        out.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod_name,
                                                                     "labels": doc["metadata"].get("labels", {})},
                    "spec": spec})
    return out, pod_name


@contextmanager
def played(docs: list[dict[str, Any]], path: Path) -> Iterator[None]:
    """`podman kube play --network none`, torn down afterwards whatever happens."""
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    try:
        podman("kube", "play", "--network", "none", str(path), timeout=300)
        yield
    finally:
        podman("kube", "down", str(path), timeout=120, check=False)


def wait_exit(container: str, timeout: float = 180) -> int:
    result = podman("wait", container, timeout=timeout)
    return int(result.stdout.strip().splitlines()[-1])


def logs(container: str) -> str:
    result = podman("logs", container, check=False, timeout=60)
    return result.stdout + result.stderr


def secret_dir(base: Path, name: str, files: dict[str, str]) -> Path:
    """A directory standing in for a Secret volume: the files, mode 0440, group the image's."""
    directory = base / name
    directory.mkdir(parents=True)
    for filename, content in files.items():
        target = directory / filename
        target.write_text(content)
        os.chmod(target, 0o440)
        os.chown(target, 0, UID)
    os.chmod(directory, 0o755)
    return directory


def chown_tree(path: Path, uid: int = UID) -> None:
    for dirpath, _dirs, files in os.walk(path):
        os.chown(dirpath, uid, uid)
        for name in files:
            os.chown(os.path.join(dirpath, name), uid, uid)


def copy_packages(target: Path, names: list[str]) -> None:
    """Pure-Python packages of this interpreter (botocore and its dependencies) for the
    application container: the image holds only rolesanywhere-hsm's own."""
    import importlib.util

    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin, name
        origin = Path(spec.origin)
        if origin.name == "__init__.py":
            shutil.copytree(origin.parent, target / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, target / origin.name)
