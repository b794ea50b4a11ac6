"""The Kubernetes manifests as data (fast; tests/deploy/test_container.py plays them): non-root,
read-only, PINs and tokens only from Secret files, the node agent on the container endpoint
only with a token, probes on /readyz and /livez."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.podman import load

WORKLOADS = ["sidecar.yaml", "node-agent.yaml", "update-sidecar.yaml"]


def pod_spec(name: str) -> dict[str, Any]:
    (doc,) = load(name)
    return doc["spec"]["template"]["spec"]


def ours(spec: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == "rolesanywhere-hsm"]
    return container


@pytest.mark.parametrize("name", WORKLOADS)
def test_non_root_read_only_and_secrets_as_files(name: str) -> None:
    spec = pod_spec(name)
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 10001
    container = ours(spec)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["envFrom"] == [{"configMapRef": {"name": "rolesanywhere-hsm"}}]
    for c in spec.get("initContainers", []) + spec["containers"]:
        for env in c.get("env", []):
            assert "PIN" not in env["name"].upper() and "valueFrom" not in env, env  # no PIN literal
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["pin"]["secret"]["secretName"] == "rolesanywhere-hsm-pin"
    assert {"name": "state", "mountPath": "/var/lib/rolesanywhere-hsm"} in container["volumeMounts"]


def test_the_config_takes_the_pin_from_the_secret_file() -> None:
    (config,) = load("config.yaml")
    assert config["data"]["RAH_CERTIFICATE"].endswith("?pin-source=file:/run/secrets/rolesanywhere-hsm-pin/pin")
    assert not any("PIN" in key for key in config["data"])


def test_node_agent_is_the_container_endpoint_only_with_a_token() -> None:
    (doc,) = load("node-agent.yaml")
    assert doc["kind"] == "DaemonSet"
    args = ours(doc["spec"]["template"]["spec"])["args"]
    assert args[0] == "serve" and "--no-imds" in args and "--container-token-file" in args
    assert args[args.index("--hop-limit") + 1] == "1"


@pytest.mark.parametrize("name", ["sidecar.yaml", "update-sidecar.yaml"])
def test_sidecars_hold_the_app_back_until_ready(name: str) -> None:
    container = ours(pod_spec(name))
    assert container["restartPolicy"] == "Always"  # a native sidecar: started before the app
    assert "startupProbe" in container
    if name == "sidecar.yaml":
        assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
