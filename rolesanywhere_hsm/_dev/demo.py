"""The end-to-end demo: a SoftHSM token, a test CA, the emulator, and credential-process.

It runs the product the way a user does, so that a fresh machine proves the whole path in one
command: the key is generated inside the token, the CA certifies the token's public key, the
emulator trusts the CA, and `credential-process` runs as a separate process with `pkcs11:`
URIs and a `pin-source` file, exactly as an AWS SDK would run it.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from rolesanywhere_hsm.errors import RolesAnywhereError, UsageError
from rolesanywhere_hsm.files import write_atomic

__all__ = ["reuse_lines", "run_demo"]

Say = Callable[[str], None]


def run_demo(key_kind: str = "p256", keep: Path | None = None, say: Say = print) -> dict[str, object]:
    """Run the demo; return the credential_process JSON it got. `keep` keeps the work files."""
    from rolesanywhere_hsm._dev.devpki import KEY_KINDS, CertificateAuthority, write_pem
    from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
    from rolesanywhere_hsm._dev.softhsm import SoftHsmError, SoftHsmToken

    if key_kind not in KEY_KINDS:
        raise UsageError(f"Unknown key type {key_kind!r}.", hint=f"Use one of {', '.join(KEY_KINDS)}.")
    if keep is not None:
        try:
            keep.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file of that name, a parent we may not write
            from rolesanywhere_hsm.files import FILE_CODE
            from rolesanywhere_hsm.redact import redact

            reason = ("a file of that name exists" if isinstance(exc, FileExistsError)
                      else exc.strerror or type(exc).__name__)
            raise UsageError(f"Cannot create the directory {redact(str(keep))} for --keep: {reason}.",
                             hint="Give --keep a new or existing directory.", code=FILE_CODE) from None
        workdir_context: tempfile.TemporaryDirectory[str] | None = None
        workdir = keep
    else:
        workdir_context = tempfile.TemporaryDirectory(prefix="rolesanywhere-hsm-demo-")
        workdir = Path(workdir_context.name)
    try:
        ca = CertificateAuthority.create("rolesanywhere-hsm Demo Root CA", "p256")
        write_pem(workdir / "ca.crt", ca.certificate)
        say(f"1. Made a throwaway root CA: {ca.certificate.subject.rfc4514_string()} (ca.crt)")

        pin = secrets.token_hex(8)
        try:
            token = SoftHsmToken.create(workdir / "softhsm", label="rolesanywhere-demo", pin=pin,
                                        so_pin=secrets.token_hex(8))
            certificate, _ = token.add_key(key_kind, "workload", b"\x01", ca, common_name="demo-workload")
        except SoftHsmError as exc:
            raise UsageError(f"Cannot build the SoftHSM token: {exc}",
                             hint="Run `bash .ci/install-deps` (it installs softhsm2).") from None
        pin_file = write_atomic(workdir / "pin.txt", pin + "\n")
        say(f"2. Made a SoftHSM2 token 'rolesanywhere-demo' in {workdir / 'softhsm'}, generated a "
            f"{key_kind} key inside it (non-extractable), and stored the CA-issued certificate "
            f"(serial {certificate.serial_number:x}) beside it with the same CKA_ID")

        config = EmulatorConfig.for_certificates([ca.certificate])
        with Emulator(config) as emulator:
            say(f"3. Started the Roles Anywhere emulator on {emulator.url}, trusting the CA:\n"
                f"     trust anchor {emulator.trust_anchor_arn}\n"
                f"     profile      {emulator.profile_arn}\n"
                f"     role         {emulator.role_arn}")
            uri = token.uri_for("workload", type="cert", module=True, pin_source=f"file:{pin_file}")
            command = [
                sys.executable, "-m", "rolesanywhere_hsm", "credential-process",
                "--certificate", uri,
                "--trust-anchor-arn", emulator.trust_anchor_arn,
                "--profile-arn", emulator.profile_arn,
                "--role-arn", emulator.role_arn,
                "--endpoint", emulator.url,
            ]
            say("4. Ran credential-process as an AWS SDK would (the PIN comes from the "
                "pin-source file, mode 0600):\n     rolesanywhere-hsm " + shlex.join(command[3:]))
            env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAH_"))}
            env.update(token.env)
            result = subprocess.run(command, capture_output=True, text=True, env=env,
                                    stdin=subprocess.DEVNULL, timeout=120)
            if result.returncode != 0:
                raise RolesAnywhereError(
                    f"credential-process failed in the demo (exit {result.returncode}): "
                    f"{result.stderr.strip()}",
                    hint=f"Rerun with --keep DIR and look at {workdir}.",
                )
            output = json.loads(result.stdout)
            request = emulator.last_request
            issued = emulator.last_issued
        say(f"5. The emulator verified the token's {request.header('Authorization').split()[0]} "
            f"signature and the chain, and issued credentials for {issued.assumed_role_arn} "
            f"(source identity {issued.source_identity}), valid until {output['Expiration']}.")
        say("6. credential-process printed (this is what the AWS CLI reads):")
        say(json.dumps(output, indent=2))
        if keep is not None:
            say(f"The token, CA and PIN file are kept in {workdir}. To use them again (the "
                "emulator stopped with the demo; started again on the kept CA, it has the same "
                "ARNs):")
            for line in reuse_lines(workdir, token.env, command[3:]):
                say("  " + line)
        return output
    finally:
        if workdir_context is not None:
            workdir_context.cleanup()


def reuse_lines(workdir: Path, env: dict[str, str], credential_args: list[str]) -> list[str]:
    """Shell lines that reuse a kept demo: the environment to export, an emulator on the kept
    CA (its ARNs derive from the CA, so they are the demo's), and the credential-process
    command line pointed at that emulator's port (read from its port file)."""
    port_file = shlex.quote(str(workdir / "emulator.port"))
    lines = [f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())]
    lines.append(f"rolesanywhere-hsm emulator --ca {shlex.quote(str(workdir / 'ca.crt'))} "
                 f"--port-file {port_file} &")
    args = list(credential_args)
    at = args.index("--endpoint")
    endpoint = '"http://127.0.0.1:$(cat ' + port_file + ')"'
    lines.append("rolesanywhere-hsm " + shlex.join(args[:at]) + f" --endpoint {endpoint}"
                 + ("" if at + 2 >= len(args) else " " + shlex.join(args[at + 2:])))
    return lines
