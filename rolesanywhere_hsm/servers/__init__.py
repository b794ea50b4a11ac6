"""Credential servers: small applications over the shared HTTP layer (`rolesanywhere_hsm.httpserver`)
that hand the current credentials to SDKs in the formats they read.

- `imds`: the EC2 instance metadata service, version 2 (token PUT, then GETs);
- `container`: the ECS/EKS container-credentials endpoint (a bearer token);
- `app`: both behind one router, with a health path and an access log.
- `accesslog`: the access log, formatted and written in batches off the answer's path.

They read credentials only through an object with `current() -> Credentials` (the refresh
engine, `rolesanywhere_hsm.refresh.RefreshingCredentials`, or anything shaped like it): a
request never touches a token, never waits for a refresh, and when `current()` raises the
answer is 503, never an empty or expired credential.
"""

from __future__ import annotations
