"""Throwaway SoftHSM2 tokens with keys generated inside them, for the demo and the tests.

A token lives in a private directory (`DIR/softhsm2.conf` + `DIR/tokens/`); nothing touches
the system's SoftHSM configuration. The tokens are made by the code users run: keys are
generated ON the token by `provision.keygen.generate_key` (what `rolesanywhere-hsm keygen`
does: sensitive, non-extractable, explicit CKA_ID and label), a devpki CertificateAuthority
certifies the public key keygen read back, and `provision.store.import_certificate` (behind
`rolesanywhere-hsm import-certificate`) stores the certificate next to the key with the same
CKA_ID, so a `pkcs11:` URI finds both. Every session is provisioning's `open_token` (the
first half of opening a token key, then the one login). The test layouts keygen refuses on
purpose (see `add_key`) are made with direct PKCS#11 calls in such a session. Typical use::

    token = SoftHsmToken.create(tmp / "hsm", label="demo", pin=pin, so_pin=so_pin)
    certificate, uri = token.add_key("p256", "workload", b"\\x01", ca)
    os.environ.update(token.env)          # SOFTHSM2_CONF, before the signer's C_Initialize
    signer = load_signer(SignerConfig(certificate=token.uri_for("workload", type="cert")))

SoftHSM reads SOFTHSM2_CONF only at C_Initialize (docs/softhsm.md): the builder sets it for
the duration of each call and C_Finalizes afterwards, so it must not run while a PKCS#11
signer on SoftHSM is open in the same process (it refuses to, with a clear error). Several
tokens may share one directory (call `create` twice with the same directory): they then share
one SOFTHSM2_CONF, which is how a process uses two tokens at once.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rolesanywhere_hsm._dev.devpki import KEY_KINDS, CertificateAuthority
from rolesanywhere_hsm.signers.pkcs11_uri import Pkcs11Uri

__all__ = [
    "SOFTHSM_MODULE_PATHS",
    "SoftHsmError",
    "SoftHsmToken",
    "TokenKey",
    "find_softhsm_module",
    "reset_softhsm_in_process",
]

SOFTHSM_MODULE_PATHS = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)
CONF_NAME = "softhsm2.conf"

_CURVE_OIDS = {"p256": "secp256r1", "p384": "secp384r1", "p521": "secp521r1"}
# devpki's key kinds as keygen's --key-type names (keygen makes no P-521 key)
_KEYGEN_TYPES = {"p256": "ec-p256", "p384": "ec-p384", "rsa2048": "rsa-2048",
                 "rsa3072": "rsa-3072", "rsa4096": "rsa-4096"}


class SoftHsmError(RuntimeError):
    """The throwaway token could not be built (SoftHSM missing, softhsm2-util failed...)."""


def find_softhsm_module() -> str | None:
    """The SoftHSM2 PKCS#11 module on this machine, or None."""
    return next((p for p in SOFTHSM_MODULE_PATHS if os.path.isfile(p)), None)


@dataclass(frozen=True)
class TokenKey:
    """A key pair generated on the token and what was made for it."""

    kind: str  # one of devpki.KEY_KINDS
    label: str
    key_id: bytes
    certificate: Any  # cryptography.x509.Certificate
    certificate_on_token: bool
    public_key_on_token: bool
    always_authenticate: bool

    @property
    def certificate_der(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding

        return self.certificate.public_bytes(Encoding.DER)


@dataclass
class SoftHsmToken:
    """One initialised SoftHSM2 token in `directory`. `pin` and `so_pin` are the throwaway
    token's own PINs (kept here because this is test and demo setup; never a real PIN)."""

    directory: Path
    label: str
    pin: str = field(repr=False)
    so_pin: str = field(repr=False)
    serial: str
    module: str
    # By label; a second key with an equal label is filed as "label@<id hex>".
    keys: dict[str, TokenKey] = field(default_factory=dict)
    ca: CertificateAuthority | None = field(default=None, repr=False)

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def create(
        cls, directory: str | Path, label: str, pin: str, so_pin: str, *, module: str | None = None,
    ) -> SoftHsmToken:
        """Initialise a new token labelled `label` in `directory` (created if needed; a
        directory that already has tokens gets one more, with its own serial)."""
        module = module or find_softhsm_module()
        if module is None:
            raise SoftHsmError("SoftHSM2 is not installed (no libsofthsm2.so); "
                               "apt-get install softhsm2")
        for name, value in (("pin", pin), ("so_pin", so_pin)):
            if not 4 <= len(value) <= 255:  # SoftHSM's limits; softhsm2-util says less
                raise ValueError(f"SoftHSM needs a {name} of 4 to 255 characters")
        directory = Path(directory).absolute()
        (directory / "tokens").mkdir(parents=True, exist_ok=True)
        conf = directory / CONF_NAME
        if not conf.exists():
            _write_conf(conf, directory / "tokens")
        env = dict(os.environ, SOFTHSM2_CONF=str(conf))
        done = subprocess.run(  # noqa: S603
            ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin,
             "--so-pin", so_pin],
            env=env, capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            raise SoftHsmError(f"softhsm2-util --init-token failed: {done.stderr.strip() or done.stdout.strip()}")
        match = re.search(r"reassigned to slot (\d+)", done.stdout)
        if not match:
            raise SoftHsmError(f"softhsm2-util did not say which slot it used: {done.stdout.strip()}")
        token = cls(directory=directory, label=label, pin=pin, so_pin=so_pin, serial="", module=module)
        from rolesanywhere_hsm.signers.pkcs11.opening import located_token

        with token._configured(), located_token(Pkcs11Uri(slot_id=int(match.group(1))), module,
                                                {}) as (_, _lib, live):
            token.serial = live.snapshot.serial
        return token

    def copy_to(self, directory: str | Path) -> SoftHsmToken:
        """A clone in `directory` (every token of this directory, same serials and keys): a
        5 ms copy instead of seconds of RSA key generation. Use a clone in one process at a
        time with its own SOFTHSM2_CONF (two clones in one tokendir would have equal serials)."""
        directory = Path(directory).absolute()
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.directory / "tokens", directory / "tokens", dirs_exist_ok=True)
        _write_conf(directory / CONF_NAME, directory / "tokens")
        return replace(self, directory=directory, keys=dict(self.keys))

    # -- what callers need -----------------------------------------------------------------------

    @property
    def conf(self) -> Path:
        return self.directory / CONF_NAME

    @property
    def env(self) -> dict[str, str]:
        """Environment for processes (and this process, before its first C_Initialize)."""
        return {"SOFTHSM2_CONF": str(self.conf)}

    def uri_for(
        self, label: str | None = None, key_id: bytes | None = None, *, type: str | None = None,
        serial: bool = False, module: bool = False, pin: bool = False,
        pin_source: str | None = None,
    ) -> str:
        """A `pkcs11:` URI for an object on this token: `token=` plus the given label/id/type,
        optionally `serial=` (to tell apart tokens with equal labels), `module-path=`, the PIN
        itself (`pin=True`, tests only) or a `pin-source=`."""
        uri = Pkcs11Uri(
            token=self.label, serial=self.serial if serial else None, object=label, id=key_id,
            type=type, module_path=self.module if module else None,
            pin_value=self.pin if pin else None, pin_source=pin_source,
        )
        return uri.to_string()

    def add_key(
        self, kind: str, label: str, key_id: bytes, ca: CertificateAuthority | None = None, *,
        always_authenticate: bool = False, store_certificate: bool = True,
        keep_public_key: bool = True, common_name: str | None = None, needs_login: bool = True,
    ) -> tuple[Any, str]:
        """Generate a `kind` key (rsa2048/3072/4096, p256/p384/p521) on the token with keygen,
        have `ca` (default: a CA made for this token) certify it, store the certificate with
        import-certificate (same CKA_ID and label) unless `store_certificate` is False.
        Returns (certificate, key URI).

        `keep_public_key=False` deletes the public key object, like tokens that keep none:
        SoftHSM EC private keys have no CKA_EC_POINT, so the signer must then check the pairing
        with the first real signature. `needs_login=False` stores the private key with
        CKA_PRIVATE false (visible and usable without login, as a YubiKey's 9e slot is
        through OpenSC).
        """
        if kind not in KEY_KINDS:
            raise ValueError(f"unknown key kind {kind!r}; use one of {', '.join(KEY_KINDS)}")
        if ca is None:
            if self.ca is None:
                self.ca = CertificateAuthority.create(f"SoftHSM demo CA for {self.label}")
            ca = self.ca
        from cryptography.hazmat.primitives.serialization import load_der_public_key

        from rolesanywhere_hsm.provision.keygen import generate_key

        key_type = _KEYGEN_TYPES.get(kind)
        # keygen refuses these on purpose; the tests need them, so the key is made directly:
        # a P-521 key (Roles Anywhere takes P-256/P-384), CKA_ALWAYS_AUTHENTICATE and
        # CKA_PRIVATE false (keygen has no option for either), a label already on the token
        # (keygen never reuses one: later URIs would be ambiguous, which is what "dup" tests).
        direct = (key_type is None or always_authenticate or not needs_login
                  or any(k.label == label for k in self.keys.values()))
        with self._configured():
            if direct:
                with self._opened() as opened:
                    public_key = _generate_directly(opened.session, kind, label, key_id,
                                                    always_authenticate=always_authenticate,
                                                    needs_login=needs_login)
            else:
                assert key_type is not None
                generated = generate_key(self._token_uri().to_string(), key_type, label, key_id,
                                         pkcs11_lib=self.module, environ=self._pin_environ())
                public_key = load_der_public_key(generated.public_key_info)
            certificate = ca.issue_leaf(public_key, common_name=common_name or label)
            if store_certificate:
                self._import_certificate(certificate, label, key_id)
            if not keep_public_key:
                # provisioning keeps the public key by design (csr and import-certificate read
                # it); the tokens that keep none are imitated by deleting it afterwards
                from pkcs11 import Attribute, ObjectClass

                with self._opened() as opened:
                    for public in opened.objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                                                  Attribute.ID: key_id}):
                        public.destroy()
        name = label if label not in self.keys else f"{label}@{key_id.hex()}"
        self.keys[name] = TokenKey(
            kind=kind, label=label, key_id=key_id, certificate=certificate,
            certificate_on_token=store_certificate, public_key_on_token=keep_public_key,
            always_authenticate=always_authenticate,
        )
        return certificate, self.uri_for(label, type="private")

    def add_certificate(self, certificate: Any, label: str, key_id: bytes) -> None:
        """Store a certificate without a key (a CA certificate beside the leaf, as HSM
        partitions and smart cards often hold).

        A direct PKCS#11 write: import-certificate stores a leaf with its key's id and label,
        and CA certificates only under their own CN and an id from their key; the tests here
        choose the label and id, and store what import-certificate refuses (an expired leaf)."""
        with self._configured(), self._opened() as opened:
            _store_certificate(opened.session, certificate, label, key_id)

    # -- internals -------------------------------------------------------------------------------

    def _token_uri(self) -> Pkcs11Uri:
        """The URI that selects this token (its label and serial), as a user gives --token."""
        return Pkcs11Uri(token=self.label, serial=self.serial)

    def _pin_environ(self) -> dict[str, str]:
        """The environment provisioning reads the user PIN from (this throwaway token's)."""
        from rolesanywhere_hsm.signers.pin import PIN_ENV_VAR

        return {PIN_ENV_VAR: self.pin}

    @contextlib.contextmanager
    def _opened(self) -> Iterator[Any]:
        """Provisioning's logged-in read/write session on this token (`open_token`)."""
        from rolesanywhere_hsm.provision.token import open_token

        with open_token(self._token_uri(), pkcs11_lib=self.module, environ=self._pin_environ()) as opened:
            yield opened

    @contextlib.contextmanager
    def _session(self) -> Iterator[Any]:
        """A logged-in R/W session on this token in this process (provisioning's, with
        SOFTHSM2_CONF pointing here), for tests that inspect what the builder made."""
        with self._configured(), self._opened() as opened:
            yield opened.session

    def _import_certificate(self, certificate: Any, label: str, key_id: bytes) -> None:
        """`import-certificate` of `certificate` for the key `label`/`key_id`, from a file in
        the token's private directory (removed afterwards), as a user would run it."""
        from cryptography.hazmat.primitives.serialization import Encoding

        from rolesanywhere_hsm.provision.store import import_certificate

        path = self.directory / f".import-{key_id.hex()}.pem"
        path.write_bytes(certificate.public_bytes(Encoding.PEM))
        try:
            key_uri = self._token_uri().with_changes(object=label, id=key_id, type="private").to_string()
            import_certificate(key_uri, path, pkcs11_lib=self.module, environ=self._pin_environ())
        finally:
            path.unlink()

    @contextlib.contextmanager
    def _configured(self) -> Iterator[None]:
        """SOFTHSM2_CONF pointing here for the C_Initialize that provisioning's next session
        makes (the module is finalised first, and each provisioning call finalises it again as
        its last user), so that a later signer reads its own SOFTHSM2_CONF (python-pkcs11
        trap 1)."""
        from rolesanywhere_hsm.signers.pkcs11.modules import finalize_module, module_in_use

        if module_in_use(self.module):
            raise SoftHsmError("A PKCS#11 signer on SoftHSM is open in this process; close it "
                               "before building tokens (SoftHSM reads its configuration only "
                               "at C_Initialize).")
        old = os.environ.get("SOFTHSM2_CONF")
        os.environ["SOFTHSM2_CONF"] = str(self.conf)
        try:
            finalize_module(self.module)  # the next C_Initialize reads our SOFTHSM2_CONF
            yield
        finally:
            finalize_module(self.module)
            if old is None:
                os.environ.pop("SOFTHSM2_CONF", None)
            else:
                os.environ["SOFTHSM2_CONF"] = old


def reset_softhsm_in_process(module: str | None = None) -> None:
    """Test helper: forget every signer registration for the SoftHSM module and C_Finalize it,
    so that the next C_Initialize reads the current SOFTHSM2_CONF even if a test forgot to
    close a signer. Never needed by correct code."""
    module = module or find_softhsm_module()
    if module is None:
        return
    from rolesanywhere_hsm.signers.pkcs11.modules import forget_module

    forget_module(module)


def _generate_directly(session: Any, kind: str, label: str, key_id: bytes, *,
                       always_authenticate: bool, needs_login: bool) -> Any:
    """A key pair generated on the token through PKCS#11 itself, for the layouts keygen
    refuses (see `SoftHsmToken.add_key`); the private key as keygen makes it otherwise
    (sensitive, non-extractable, signing). Returns the public key (cryptography)."""
    from pkcs11 import Attribute, KeyType, MechanismFlag
    from pkcs11.util.ec import encode_named_curve_parameters

    private_template = {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: needs_login,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.ALWAYS_AUTHENTICATE: always_authenticate,
    }
    public_template = {Attribute.TOKEN: True, Attribute.VERIFY: True}
    capabilities = MechanismFlag.SIGN | MechanismFlag.VERIFY
    if kind.startswith("rsa"):
        public, _private = session.generate_keypair(
            KeyType.RSA, int(kind[3:]), id=key_id, label=label, store=True,
            capabilities=capabilities, private_template=private_template,
            public_template=public_template,
        )
        return _rsa_public_key(public[Attribute.MODULUS], public[Attribute.PUBLIC_EXPONENT])
    params = session.create_domain_parameters(
        KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(_CURVE_OIDS[kind])},
        local=True,
    )
    public, _private = params.generate_keypair(
        id=key_id, label=label, store=True, capabilities=capabilities,
        private_template=private_template, public_template=public_template,
    )
    return _ec_public_key(kind, public[Attribute.EC_POINT])


def _store_certificate(session: Any, certificate: Any, label: str, key_id: bytes) -> None:
    """A public X.509 certificate object (cryptography certificate) with this label and id."""
    from cryptography.hazmat.primitives.serialization import Encoding
    from pkcs11 import Attribute, CertificateType, ObjectClass
    from pkcs11.util.x509 import decode_x509_certificate

    attrs = decode_x509_certificate(certificate.public_bytes(Encoding.DER))
    attrs.update({
        Attribute.CLASS: ObjectClass.CERTIFICATE,
        Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.ID: key_id,
        Attribute.LABEL: label,
    })
    session.create_object(attrs)


def _write_conf(conf: Path, tokendir: Path) -> None:
    conf.write_text(
        f"directories.tokendir = {tokendir}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
    )


def _rsa_public_key(modulus: bytes, exponent: bytes) -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.RSAPublicNumbers(int.from_bytes(exponent, "big"), int.from_bytes(modulus, "big")).public_key()


def _ec_public_key(kind: str, ec_point: bytes) -> Any:
    from asn1crypto.core import OctetString
    from cryptography.hazmat.primitives.asymmetric import ec

    curves = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1(), "p521": ec.SECP521R1()}
    point = bytes(OctetString.load(ec_point).native)
    return ec.EllipticCurvePublicKey.from_encoded_point(curves[kind], point)
