"""A virtual YubiKey plugged into a real PC/SC stack: our PIV card process (tests.vpiv) behind
pcscd's vsmartcard-vpcd reader driver, so that the real ykcs11 and OpenSC modules drive it.

Wiring (all loopback): a private reader.conf.d names the reader "Yubico YubiKey OTP+FIDO+CCID"
(ykcs11 only looks at readers whose name starts with "Yubico") with `DEVICENAME 127.0.0.1:<P>`,
which puts vpcd in client mode: pcscd connects to our card process on 127.0.0.1:P (reader
"... 00 00") and P+1 (reader "... 00 01", a blank card); the card picks a free pair P, P+1.

pcscd 1.9.9 always serves /run/pcscd/pcscd.comm, but libpcsclite clients honour
PCSCLITE_CSOCK_NAME. So pcscd runs in a mount namespace of its own with a private directory
bind-mounted on /run, and clients are pointed at the socket there: no clash with a system
pcscd or with another test session. Where namespaces are refused, the real /run/pcscd is used
under a machine-wide lock, and only if no other pcscd runs."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, new_private_key, write_pem
from tests.tokens.processes import (
    die_with_parent,
    missing_binaries,
    pid_alive,
    run,
    stop_process,
    wait_until,
)
from tests.tokens.pkcs11_lib import finalize_if_initialized
from tests.tokens.uri import pkcs11_uri

if TYPE_CHECKING:
    import pkcs11

__all__ = [
    "OPENSC_MODULE",
    "PCSCD_PID_FILE",
    "VPCD_DRIVER",
    "YKCS11_MODULE",
    "ForeignPcscd",
    "PivLabels",
    "PivSlot",
    "VirtualYubiKey",
    "missing_yubikey_binaries",
    "pcsc_socket_path",
    "start_virtual_yubikey",
]

YKCS11_MODULE = "/usr/lib/x86_64-linux-gnu/libykcs11.so"
OPENSC_MODULE = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
VPCD_DRIVER = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"  # from `dpkg -L vsmartcard-vpcd`
PCSCD_DIR = Path("/run/pcscd")
PCSCD_PID_FILE = PCSCD_DIR / "pcscd.pid"
READER_NAME = "Yubico YubiKey OTP+FIDO+CCID"
REPO_ROOT = Path(__file__).resolve().parents[2]

_BINARIES = ("pcscd", "opensc-tool", YKCS11_MODULE, OPENSC_MODULE, VPCD_DRIVER)

# slot -> (key kind, CKA_ID, PIN policy, ykcs11 name, OpenSC key-label stem)
_SLOTS = (
    ("9a", "rsa2048", b"\x01", "once", "PIV Authentication", "PIV AUTH"),
    ("9c", "p256", b"\x02", "always", "Digital Signature", "SIGN"),
    ("9d", "p384", b"\x03", "once", "Key Management", "KEY MAN"),
    ("9e", "p256", b"\x04", "never", "Card Authentication", "CARD AUTH"),
)


class ForeignPcscd(RuntimeError):
    """A pcscd we did not start owns /run/pcscd: ours cannot run beside it."""


def missing_yubikey_binaries() -> list[str]:
    """What is not installed of pcscd, vsmartcard-vpcd, ykcs11 and OpenSC."""
    return missing_binaries(*_BINARIES)


@dataclass(frozen=True)
class PivLabels:
    """CKA_LABEL of a slot's objects as one PKCS#11 module names them."""

    certificate: str
    private_key: str
    public_key: str


@dataclass(frozen=True)
class PivSlot:
    """One PIV key slot of the virtual card and how both modules present it."""

    name: str  # "9a"
    key_kind: str  # devpki kind: "rsa2048", "p256", "p384"
    id: bytes  # CKA_ID, the same in ykcs11 and OpenSC
    pin_policy: str  # "once", "always" (CKA_ALWAYS_AUTHENTICATE) or "never"
    certificate: x509.Certificate
    certificate_path: Path
    ykcs11_labels: PivLabels
    opensc_labels: PivLabels

    @property
    def always_authenticate(self) -> bool:
        return self.pin_policy == "always"

    @property
    def key_type(self) -> str:
        return "rsa" if self.key_kind.startswith("rsa") else "ec"


@dataclass
class VirtualYubiKey:
    """A running card process + pcscd; see tests/fixtures/yubikey.py for the tour."""

    ykcs11_module: str
    opensc_module: str
    pin: str
    serial: int
    ykcs11_token_label: str
    opensc_token_label: str
    opensc_manufacturer: str
    slots: dict[str, PivSlot]
    ca: CertificateAuthority
    ca_path: Path
    attestation_certificate: x509.Certificate
    attestation_root: CertificateAuthority  # plays Yubico's PIV root: it issued the f9 certificate
    attestation_root_path: Path
    directory: Path
    control_path: Path
    pcsc_env: dict[str, str]  # PCSCLITE_CSOCK_NAME: where PC/SC clients find our pcscd
    private_run: bool  # pcscd in its own mount namespace (else the real /run/pcscd, locked)
    _card: subprocess.Popen[bytes] = field(repr=False)
    _run_dir: Path = field(repr=False)
    _lock: Any = field(repr=False, default=None)
    _pcscd: subprocess.Popen[bytes] | None = field(repr=False, default=None)

    def open_library(self, module: str) -> pkcs11.lib:
        """python-pkcs11's cached library for `module`, re-initialised.

        A fresh C_Initialize drops the login state of earlier tests (it is per process) and
        makes the module enumerate pcscd's readers again.
        """
        import pkcs11

        lib = pkcs11.lib(module)
        lib.reinitialize()
        return lib

    def token_label(self, module: str) -> str:
        return self.ykcs11_token_label if module == self.ykcs11_module else self.opensc_token_label

    def uri_for(
        self, slot: str, module: str, *, type: str | None = None, by_label: bool = False,
        pin: bool = False, module_path: bool = False,
    ) -> str:
        """A `pkcs11:` URI for slot "9a".."9e" as `module` names it.

        ykcs11: `token=YubiKey%20PIV%20%23<serial>`; OpenSC: `manufacturer=piv_II` (its token
        label is the 9a certificate's CN, which changes with the certificate). `by_label` adds
        `object=` with the module's label for the `type` ("cert" by default): with ykcs11 the
        slot's `id` also matches the attestation certificate.
        """
        s = self.slots[slot]
        ykcs11 = module == self.ykcs11_module
        labels = s.ykcs11_labels if ykcs11 else s.opensc_labels
        label = {"private": labels.private_key, "public": labels.public_key}.get(type or "cert", labels.certificate)
        return pkcs11_uri(
            {"token": self.ykcs11_token_label if ykcs11 else None,
             "manufacturer": None if ykcs11 else self.opensc_manufacturer,
             "object": label if by_label else None, "type": type, "id": s.id},
            {"module-path": module if module_path else None, "pin-value": self.pin if pin else None},
        )

    def subprocess_env(self, module: str, *, pin: bool = False) -> dict[str, str]:
        """`os.environ` plus PCSCLITE_CSOCK_NAME, RAH_PKCS11_MODULE=`module` and, if `pin`,
        RAH_PKCS11_PIN: the environment for running the CLI against the card."""
        env = {**os.environ, **self.pcsc_env, "RAH_PKCS11_MODULE": module}
        env.pop("RAH_PKCS11_PIN", None)
        if pin:
            env["RAH_PKCS11_PIN"] = self.pin
        return env

    # -- the card's own view, through the control socket ----------------------------------
    def _control(self, command: str, **arguments: Any) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.control_path))
            with sock.makefile("rwb") as stream:
                stream.write(json.dumps({"command": command, **arguments}).encode() + b"\n")
                stream.flush()
                answer: dict[str, Any] = json.loads(stream.readline())
        if not answer.get("ok"):
            raise RuntimeError(f"virtual card refused {command!r}: {answer}")
        return answer

    def status(self) -> dict[str, Any]:
        """pin_retries_left, pin_verified, verify_attempts, signatures and refused (signature
        commands refused on purpose) per slot, refusals_pending, connections."""
        return self._control("status")

    def pin_retries_left(self) -> int:
        return int(self.status()["pin_retries_left"])

    def reset_pin(self) -> None:
        """Give the PIN its 3 tries back (what a PUK unblock does on a real key)."""
        self._control("reset-pin")

    def set_pin(self, pin: str) -> None:
        """Change the card's PIN (6..8 characters) behind the modules' backs, keeping the
        security status: a session logged in with the old PIN signs on, the next login with it
        fails. Restore with `set_pin(self.pin)`."""
        self._control("set-pin", pin=pin)

    def clear_counters(self) -> None:
        """Zero verify_attempts and the signature counts, to count one test's APDUs; also
        cancels refusals still pending from `fail_next_signatures`."""
        self._control("clear-counters")

    def forget_provisioned(self) -> None:
        """Remove the keys the card generated and the objects written with PUT DATA during
        the session (keygen and import-certificate tests clean up with this)."""
        self._control("forget-provisioned")

    def fail_next_signatures(self, count: int, sw: str = "6982") -> None:
        """Make the card answer `sw` (hex status word) instead of signing, for the next `count`
        signature commands it would otherwise have carried out; 0 cancels.

        6982 ("security status not satisfied") is what a real YubiKey answers when its PIN no
        longer counts as verified; it is the refusal that makes OpenSC drop its login.
        """
        self._control("refuse-signatures", count=count, sw=sw)

    def import_key(self, slot: str, key_path: Path, cert_path: Path | None = None, *,
                   pin_policy: str = "once") -> None:
        """Put the PEM private key at `key_path` into `slot` ("82".."95", "9a", ...) as an
        imported key (Yubico's IMPORT): it signs, but the card refuses to attest it. Removed
        by `forget_provisioned`."""
        self._control("import-key", slot=slot, key=str(key_path),
                      cert=str(cert_path) if cert_path else None, pin_policy=pin_policy)

    def apdu_log(self) -> list[str]:
        """The card's last 400 commands and status words (PINs redacted), for debugging."""
        return list(self._control("log")["log"])

    def finalize_in_process(self) -> None:
        """C_Finalize ykcs11 and OpenSC in this process if they were loaded here, while pcscd
        still runs (so the modules release their PC/SC handles cleanly)."""
        for module in (self.ykcs11_module, self.opensc_module):
            finalize_if_initialized(module)

    def stop(self) -> None:
        try:
            # pcscd first: vpcd aborts pcscd as soon as the card's connection goes away.
            if self._pcscd is not None:
                stop_process(self._pcscd)
            stop_process(self._card)
        finally:
            if self._lock is not None:
                self._lock.close()
            shutil.rmtree(self._run_dir, ignore_errors=True)


def pcsc_socket_path() -> Path:
    """The PC/SC socket of this process's virtual YubiKey: PCSCLITE_CSOCK_NAME for clients.

    Per process (per xdist worker), so sessions running side by side never meet. libpcsclite
    reads PCSCLITE_CSOCK_NAME once, at its first use in a process: the fixture plugin sets it
    when pytest imports it, before any test loads a module.
    """
    return Path(tempfile.gettempdir()) / f"rah-pcscd-{os.getpid()}" / "pcscd" / "pcscd.comm"


def _foreign_pcscd() -> int | None:
    try:
        # pcscd writes the pid followed by a NUL byte.
        pid = int(PCSCD_PID_FILE.read_text().strip("\0 \n"))
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def _private_run_prefix(run_dir: Path) -> list[str] | None:
    """An `unshare` prefix under which `mount --bind run_dir /run` works, or None.

    pcscd 1.9.9 always serves /run/pcscd/pcscd.comm; in a mount namespace of its own with our
    directory on /run, that socket is run_dir/pcscd/pcscd.comm for everyone else. As root a
    mount namespace is enough; otherwise a user namespace maps us to root inside it (refused
    where unprivileged user namespaces are disabled: then we fall back to the real /run).
    RAH_VPIV_SYSTEM_RUN=1 forces that fallback, to test it.
    """
    if shutil.which("unshare") is None or os.environ.get("RAH_VPIV_SYSTEM_RUN") == "1":
        return None
    prefix = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        prefix = ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"]
    probe = run([*prefix, "sh", "-c", 'mount --bind "$0" /run', str(run_dir)], check=False, timeout=10)
    return prefix if probe.returncode == 0 else None


def _acquire_system_run_lock(timeout: float) -> Any:
    """Serialise sessions that must share the real /run/pcscd (no namespaces available).

    Returns the open lock file; closing it releases the lock (also when the process dies).
    """
    lock = open(Path(tempfile.gettempdir()) / "rolesanywhere-hsm-pcscd.lock", "w")  # noqa: SIM115
    try:
        wait_until(lambda: _try_flock(lock), timeout=timeout, interval=0.2,
                   what="another test session's virtual YubiKey to finish (it holds /run/pcscd)")
    except BaseException:
        lock.close()
        raise
    return lock


def _try_flock(lock: Any) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _card_is_in_reader(env: dict[str, str]) -> bool:
    # opensc-tool goes through libpcsclite like the modules do: an end-to-end readiness probe.
    out = run(["opensc-tool", "--list-readers"], env=env, timeout=10, check=False).stdout
    return any(f"{READER_NAME} 00 00" in line and " Yes " in line for line in out.splitlines())


def start_virtual_yubikey(
    directory: Path,
    ca: CertificateAuthority,
    *,
    pin: str = "123456",
    serial: int = 31415926,
    debug: bool = False,
    timeout: float = 15.0,
    system_run_wait: float = 300.0,
) -> VirtualYubiKey:
    """Make the keys and certificates, start the card process, then pcscd; wait until ready.

    pcscd gets a private /run when the system allows it (see _private_run_prefix); otherwise it
    uses the real /run/pcscd, after waiting up to `system_run_wait` seconds for another of our
    sessions to release it, and raises ForeignPcscd if a pcscd we did not start holds it.
    Sets PCSCLITE_CSOCK_NAME in os.environ. On any failure, what was started is stopped.
    """
    directory.mkdir(parents=True, exist_ok=True)
    socket_path = pcsc_socket_path()
    run_dir = socket_path.parent.parent
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.environ["PCSCLITE_CSOCK_NAME"] = str(socket_path)
    lock = None
    try:
        prefix = _private_run_prefix(run_dir)
        if prefix is None:
            lock = _acquire_system_run_lock(system_run_wait)
            foreign = _foreign_pcscd()
            if foreign is not None:
                raise ForeignPcscd(
                    f"pcscd (pid {foreign}) is already running and no private mount namespace is "
                    "available for ours (unshare); stop it (systemctl stop pcscd.socket pcscd)"
                )
            socket_path.parent.mkdir(exist_ok=True)
            socket_path.unlink(missing_ok=True)
            socket_path.symlink_to(PCSCD_DIR / "pcscd.comm")
        yubikey = _start(directory, ca, pin=pin, serial=serial, debug=debug, timeout=timeout,
                         prefix=prefix, run_dir=run_dir, lock=lock)
    except BaseException:
        if lock is not None:
            lock.close()
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return yubikey


def _start(
    directory: Path, ca: CertificateAuthority, *, pin: str, serial: int, debug: bool, timeout: float,
    prefix: list[str] | None, run_dir: Path, lock: Any,
) -> VirtualYubiKey:
    slots: dict[str, PivSlot] = {}
    card_slots = []
    for name, kind, key_id, policy, yk_name, sc_name in _SLOTS:
        key = new_private_key(kind)
        # The 9a certificate's CN becomes OpenSC's token label.
        cert = ca.issue_leaf(key.public_key(), f"virtual-yubikey-{name}")
        key_path = write_pem(directory / f"{name}.key.pem", key, mode=0o600)
        cert_path = write_pem(directory / f"{name}.crt.pem", cert)
        card_slots.append({"slot": name, "key": str(key_path), "cert": str(cert_path), "pin_policy": policy})
        slots[name] = PivSlot(
            name=name, key_kind=kind, id=key_id, pin_policy=policy, certificate=cert,
            certificate_path=cert_path,
            ykcs11_labels=PivLabels(f"X.509 Certificate for {yk_name}", f"Private key for {yk_name}",
                                    f"Public key for {yk_name}"),
            opensc_labels=PivLabels(f"Certificate for {yk_name}", f"{sc_name} key", f"{sc_name} pubkey"),
        )
    from tests.vpiv.card import make_attestation_key

    attestation_root = CertificateAuthority.create("rolesanywhere-hsm Test PIV Attestation Root", "p256")
    att_key, att_cert = make_attestation_key(serial, (attestation_root.key, attestation_root.certificate))
    att_paths = {"key": str(write_pem(directory / "f9.key.pem", att_key, mode=0o600)),
                 "cert": str(write_pem(directory / "f9.crt.pem", att_cert))}
    config = directory / "card.json"
    config.write_text(json.dumps({"serial": serial, "pin": pin, "slots": card_slots, "attestation": att_paths}))

    control = directory / "card.sock"
    with open(directory / "card.log", "wb") as card_log:
        # --port 0: the card picks a free pair of loopback ports, reported by its status.
        card = subprocess.Popen(
            [sys.executable, "-m", "tests.vpiv.vpcd", "--config", str(config), "--control", str(control),
             "--port", "0"],
            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            stdin=subprocess.DEVNULL, stdout=card_log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent,
        )
    yubikey = VirtualYubiKey(
        ykcs11_module=YKCS11_MODULE, opensc_module=OPENSC_MODULE, pin=pin, serial=serial,
        ykcs11_token_label=f"YubiKey PIV #{serial}",
        opensc_token_label=slots["9a"].certificate.subject.rfc4514_string().removeprefix("CN="),
        opensc_manufacturer="piv_II", slots=slots, ca=ca,
        ca_path=write_pem(directory / "ca.pem", ca.certificate),
        attestation_certificate=att_cert, attestation_root=attestation_root,
        attestation_root_path=write_pem(directory / "attestation-root.pem", attestation_root.certificate),
        directory=directory, control_path=control,
        pcsc_env={"PCSCLITE_CSOCK_NAME": str(pcsc_socket_path())},
        private_run=prefix is not None, _card=card, _run_dir=run_dir, _lock=lock,
    )
    try:
        def card_ready() -> bool:
            if card.poll() is not None:
                raise RuntimeError(f"virtual card exited {card.returncode}:\n{(directory / 'card.log').read_text()}")
            try:
                yubikey.status()
            except OSError:
                return False
            return True

        wait_until(card_ready, timeout=timeout, what="the virtual card's control socket")
        port = int(yubikey.status()["port"])
        conf_dir = directory / "reader.conf.d"
        conf_dir.mkdir(exist_ok=True)
        # A DEVICENAME with a host puts vpcd in client mode (it connects to us, on loopback);
        # without one it would listen on every interface.
        (conf_dir / "vpcd").write_text(
            f'FRIENDLYNAME "{READER_NAME}"\n'
            f"DEVICENAME   127.0.0.1:{port}\n"
            f"LIBPATH      {VPCD_DRIVER}\n"
            f"CHANNELID    {port}\n"
        )
        pcscd = ["pcscd", "--foreground", "--config", str(conf_dir), *(["--apdu", "--debug"] if debug else [])]
        if prefix is not None:
            pcscd = [*prefix, "sh", "-c", 'mount --bind "$0" /run && exec "$@"', str(run_dir), *pcscd]
        with open(directory / "pcscd.log", "wb") as pcscd_log:
            yubikey._pcscd = subprocess.Popen(
                pcscd, stdin=subprocess.DEVNULL, stdout=pcscd_log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent,
            )

        def reader_ready() -> bool:
            assert yubikey._pcscd is not None
            if yubikey._pcscd.poll() is not None:
                raise RuntimeError(f"pcscd exited {yubikey._pcscd.returncode}:\n"
                                   f"{(directory / 'pcscd.log').read_text()[-3000:]}")
            return _card_is_in_reader(yubikey.pcsc_env)

        wait_until(reader_ready, timeout=timeout, what="pcscd to see the virtual card", interval=0.05)
    except BaseException:
        yubikey.stop()
        raise
    return yubikey
