"""A throwaway TPM 2.0 token: swtpm on a private unix socket, tpm2-pkcs11 on top of it.

The token is built through PKCS#11 alone (pkcs11-tool), with no resource manager: the TPM has
only three transient object slots, so every setup step runs in its own process and
`tpm2_flushcontext -t` empties the slots in between. Keys are generated inside the TPM; their
certificates come from a devpki CA for the public keys read back from the token.
"""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, write_pem
from tests.tokens.processes import die_with_parent, missing_binaries, run, stop_process, wait_until
from tests.tokens.pkcs11_lib import finalize_if_initialized
from tests.tokens.uri import pkcs11_uri

if TYPE_CHECKING:
    import pkcs11

__all__ = [
    "TPM2_PKCS11_MODULE",
    "TpmKey",
    "TpmToken",
    "clear_lockout",
    "lockout_counter",
    "missing_tpm_binaries",
    "start_swtpm",
    "start_tpm_token",
]

TPM2_PKCS11_MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so"

_BINARIES = ("swtpm", "pkcs11-tool", "tpm2_flushcontext", "tpm2_dictionarylockout", "tpm2_getcap",
             TPM2_PKCS11_MODULE)

# (label, CKA_ID, pkcs11-tool --key-type); labels double as certificate CNs.
_KEYS = (
    ("tpm-rsa2048", b"\x01", "rsa:2048"),
    ("tpm-p256", b"\x02", "EC:prime256v1"),
)


def missing_tpm_binaries() -> list[str]:
    """What is not installed of swtpm, tpm2-tools, pkcs11-tool and the tpm2-pkcs11 module."""
    return missing_binaries(*_BINARIES)


@dataclass(frozen=True)
class TpmKey:
    """One key pair generated inside the TPM, with its certificate stored under the same CKA_ID."""

    label: str
    id: bytes
    key_type: str  # "rsa" or "ec"
    certificate: x509.Certificate
    certificate_path: Path  # PEM

    @property
    def id_hex(self) -> str:
        return self.id.hex()


@dataclass
class TpmToken:
    """A running swtpm with one tpm2-pkcs11 token on it.

    `env` must be in the environment of whatever calls C_Initialize on `module`
    (tpm2-pkcs11 reads it only then); `open_library()` does that for in-process tests.
    """

    module: str
    env: dict[str, str]
    token_label: str
    user_pin: str
    so_pin: str
    keys: dict[str, TpmKey]
    ca: CertificateAuthority
    ca_path: Path
    directory: Path
    tools_env: dict[str, str]  # TPM2TOOLS_TCTI for tpm2-tools
    swtpm: subprocess.Popen[bytes] = field(repr=False)

    @property
    def rsa(self) -> TpmKey:
        return self.keys["rsa"]

    @property
    def ec(self) -> TpmKey:
        return self.keys["ec"]

    def open_library(self) -> pkcs11.lib:
        """python-pkcs11's (cached) library object, re-initialised with this token's env.

        Sets the TPM2_PKCS11_* variables process-wide: tpm2-pkcs11 only reads them from the
        environment, and only at C_Initialize, hence the reinitialize (which also drops
        sessions leaked by failed logins, python-pkcs11 trap 2 in docs/tokens.md).
        """
        import pkcs11

        os.environ.update(self.env)
        lib = pkcs11.lib(self.module)
        lib.reinitialize()
        return lib

    def uri_for(
        self, key: str, *, type: str | None = None, pin: bool = False, module: bool = False,
        pin_source: str | None = None,
    ) -> str:
        """A `pkcs11:` URI for key "rsa" or "ec": token, object label, id, and optionally
        `type=` (cert/private/public), `pin-value=` (tests only), `pin-source=`, `module-path=`."""
        k = self.keys[key]
        return pkcs11_uri(
            {"token": self.token_label, "object": k.label, "type": type, "id": k.id},
            {"module-path": self.module if module else None,
             "pin-value": self.user_pin if pin else None, "pin-source": pin_source},
        )

    def subprocess_env(self, *, pin: bool = False) -> dict[str, str]:
        """`os.environ` plus what a child process (the CLI) needs to sign with this token:
        TPM2_PKCS11_TCTI/STORE, RAH_PKCS11_MODULE and, if `pin`, RAH_PKCS11_PIN."""
        env = {**os.environ, **self.env, "RAH_PKCS11_MODULE": self.module}
        env.pop("RAH_PKCS11_PIN", None)
        if pin:
            env["RAH_PKCS11_PIN"] = self.user_pin
        return env

    def finalize_in_process(self) -> None:
        """C_Finalize the module in this process, if it was ever loaded here.

        Done before swtpm stops, so that the module flushes its TPM objects and no later
        C_Finalize (at interpreter exit) talks to a dead socket.
        """
        finalize_if_initialized(self.module)

    def clear_lockout(self) -> None:
        """Reset the TPM's dictionary-attack counter and leave lockout.

        Each wrong user PIN is an authorisation failure counted by the TPM (max 3, then
        locked for TPM2_PT_LOCKOUT_RECOVERY = 1000 s); this clears it at once with the
        (empty) lockout hierarchy auth.
        """
        clear_lockout(self.tools_env)

    def lockout_counter(self) -> int:
        """TPM2_PT_LOCKOUT_COUNTER: how many authorisation failures the TPM has counted."""
        return lockout_counter(self.tools_env)

    def flush_transient(self) -> None:
        """Flush transient objects and loaded sessions left by a process that died in C_Finalize's stead.

        A tpm2-pkcs11 user that exits without C_Finalize (os._exit, SIGKILL, crash) leaves its
        two transient objects and its sessions in the TPM; with no resource manager the next
        C_Login then fails with CKR_GENERAL_ERROR ("Error unsealing wrapping key").
        """
        run(["tpm2_flushcontext", "-t"], env=self.tools_env, timeout=10)
        run(["tpm2_flushcontext", "-l"], env=self.tools_env, timeout=10)

    def stop(self) -> None:
        stop_process(self.swtpm)


def start_tpm_token(
    directory: Path,
    ca: CertificateAuthority,
    *,
    token_label: str = "rah-tpm",
    user_pin: str = "123456",
    so_pin: str = "12345678",
    with_keys: bool = True,
) -> TpmToken:
    """Start swtpm under `directory` and build a token with an RSA-2048 and a P-256 key
    (`with_keys=False`: an initialised token with a user PIN and no objects).

    On failure the swtpm started here is stopped before the exception propagates.
    """
    directory.mkdir(parents=True, exist_ok=True)
    store = directory / "store"
    store.mkdir()
    swtpm, sock = start_swtpm(directory)
    tcti = f"swtpm:path={sock}"
    env = {"TPM2_PKCS11_TCTI": tcti, "TPM2_PKCS11_STORE": str(store)}
    tools_env = {"TPM2TOOLS_TCTI": tcti}
    # Setup commands: quiet tpm2-pkcs11's "no such table: schema" warning of a fresh store.
    setup_env = {**env, **tools_env, "TPM2_PKCS11_LOG_LEVEL": "0"}
    try:
        token = TpmToken(
            module=TPM2_PKCS11_MODULE, env=env, token_label=token_label, user_pin=user_pin,
            so_pin=so_pin, keys={}, ca=ca, ca_path=write_pem(directory / "ca.pem", ca.certificate),
            directory=directory, swtpm=swtpm, tools_env=tools_env,
        )
        _build_token(token, setup_env, _KEYS if with_keys else ())
    except BaseException:
        stop_process(swtpm)
        raise
    return token


def start_swtpm(directory: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """Start a fresh swtpm (state in `directory`/state) on the unix socket `directory`/tpm.sock
    and wait until it accepts connections; return the process and the socket path. Its TCTI
    is `swtpm:path=<socket>`. On failure the process is stopped before the exception propagates."""
    state = directory / "state"
    state.mkdir(parents=True)
    sock = directory / "tpm.sock"
    # In the foreground rather than --daemon: as our child it can be told to die with us
    # (die_with_parent) if pytest is killed, and teardown can reap it.
    # not-need-init,startup-clear spare us tpm2_startup.
    with open(directory / "swtpm.log", "wb") as log:
        swtpm = subprocess.Popen(
            [
                "swtpm", "socket", "--tpm2",
                "--server", f"type=unixio,path={sock}",
                "--ctrl", f"type=unixio,path={sock}.ctrl",
                "--tpmstate", f"dir={state}",
                "--flags", "not-need-init,startup-clear",
            ],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent,
        )

    def listening() -> bool:
        if swtpm.poll() is not None:
            raise RuntimeError(f"swtpm exited {swtpm.returncode}: {(directory / 'swtpm.log').read_text()}")
        return _accepts(sock) and _accepts(Path(f"{sock}.ctrl"))

    try:
        wait_until(listening, timeout=10, what="swtpm's sockets")
    except BaseException:
        stop_process(swtpm)
        raise
    return swtpm, sock


def lockout_counter(tools_env: dict[str, str]) -> int:
    """TPM2_PT_LOCKOUT_COUNTER of the TPM that `tools_env` (TPM2TOOLS_TCTI) names."""
    out = run(["tpm2_getcap", "properties-variable"], env=tools_env, timeout=10).stdout
    for line in out.splitlines():
        if line.strip().startswith("TPM2_PT_LOCKOUT_COUNTER:"):
            return int(line.split(":", 1)[1].strip(), 0)
    raise RuntimeError(f"no TPM2_PT_LOCKOUT_COUNTER in tpm2_getcap output:\n{out}")


def clear_lockout(tools_env: dict[str, str]) -> None:
    """Reset the dictionary-attack counter and leave lockout (empty lockout hierarchy auth)."""
    run(["tpm2_dictionarylockout", "--clear-lockout"], env=tools_env, timeout=10)


def _accepts(path: Path) -> bool:
    """True once a unix socket accepts connections (a connect-and-close is harmless to swtpm)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _build_token(token: TpmToken, setup_env: dict[str, str],
                 keys: tuple[tuple[str, bytes, str], ...]) -> None:
    tool = ["pkcs11-tool", "--module", token.module]
    user = [*tool, "--token-label", token.token_label, "--login", "--pin", token.user_pin]

    def step(args: list[str], timeout: float = 60) -> str:
        out = run(args, env=setup_env, timeout=timeout).stdout
        # No resource manager: whatever the step left loaded would fill the 3 object slots.
        run(["tpm2_flushcontext", "-t"], env=setup_env, timeout=10)
        return out

    step([*tool, "--slot-index", "0", "--init-token", "--label", token.token_label,
          "--so-pin", token.so_pin])
    step([*tool, "--token-label", token.token_label, "--login", "--login-type", "so",
          "--so-pin", token.so_pin, "--init-pin", "--pin", token.user_pin])
    for label, key_id, key_type in keys:
        # One key per process (= per C_Initialize): without abrmd more would not fit.
        step([*user, "--keypairgen", "--key-type", key_type, "--id", key_id.hex(), "--label", label])
        pub_path = token.directory / f"{label}.pub.der"
        step([*tool, "--token-label", token.token_label, "--read-object", "--type", "pubkey",
              "--id", key_id.hex(), "--output-file", str(pub_path)])
        public_key: Any = serialization.load_der_public_key(pub_path.read_bytes())
        cert = token.ca.issue_leaf(public_key, label)
        cert_der = token.directory / f"{label}.crt.der"
        cert_der.write_bytes(cert.public_bytes(serialization.Encoding.DER))
        step([*user, "--write-object", str(cert_der), "--type", "cert", "--id", key_id.hex(),
              "--label", label])
        kind = "rsa" if key_type.startswith("rsa") else "ec"
        token.keys[kind] = TpmKey(
            label=label, id=key_id, key_type=kind, certificate=cert,
            certificate_path=write_pem(token.directory / f"{label}.crt.pem", cert),
        )
