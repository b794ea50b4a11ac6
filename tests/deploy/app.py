"""The application container of the Kubernetes tests: botocore, as an AWS SDK in a pod would
run, gets credentials through the path named on the command line and prints what it got as
JSON lines. Runs inside the image (python 3.11, botocore copied in on PYTHONPATH)."""

import json
import os
import sys
import time
import urllib.error
import urllib.request

SERVE = "http://127.0.0.1:9911"


def wait_until(ready, what, timeout=120.0):
    """What the manifests' startup probes do in a cluster: hold the application back."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            sys.exit(f"app: {what} not ready within {timeout} s")
        time.sleep(0.25)


def healthy():
    try:
        with urllib.request.urlopen(f"{SERVE}/readyz", timeout=2) as answer:
            return answer.status == 200
    except (OSError, urllib.error.URLError):
        return False


def status_of(path, headers=None, method="GET"):
    request = urllib.request.Request(f"{SERVE}{path}", headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def credentials(check, environ):
    import botocore.session

    os.environ.clear()
    os.environ.update(environ)
    found = botocore.session.Session().get_credentials()
    if found is None:
        sys.exit(f"app: botocore found no credentials ({check})")
    frozen = found.get_frozen_credentials()
    print(json.dumps({"check": check, "method": found.method, "access_key_id": frozen.access_key,
                      "has_secret": bool(frozen.secret_key), "has_token": bool(frozen.token)}), flush=True)


def main():
    check = sys.argv[1]
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base["AWS_EC2_METADATA_DISABLED"] = "true"
    if check in ("sidecar", "node-agent"):
        wait_until(healthy, "serve")
        container = {k: v for k, v in os.environ.items() if k.startswith("AWS_CONTAINER_")}
        credentials("container", {**base, **container})
        print(json.dumps({"check": "no-token", "status": status_of("/container/credentials")}), flush=True)
        print(json.dumps({"check": "imds-token", "status": status_of(
            "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"}, "PUT")}), flush=True)
        if check == "sidecar":
            imds = dict(base, AWS_EC2_METADATA_SERVICE_ENDPOINT=f"{SERVE}/")
            imds.pop("AWS_EC2_METADATA_DISABLED")
            credentials("imds", imds)
    elif check == "file":
        path = os.environ["AWS_SHARED_CREDENTIALS_FILE"]
        wait_until(lambda: os.path.exists(path), path)
        credentials("file", {**base, "AWS_SHARED_CREDENTIALS_FILE": path})
    else:
        sys.exit(f"app: unknown check {check}")


main()
