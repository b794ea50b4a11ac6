"""A software TPM with TPM key files (TSS2 PEM) made in it, and certificates for them.

No PKCS#11 store: the keys live in files, encrypted under the TPM's storage primary (parent
0x40000001), as tpm2-openssl and tpm2-tss-engine write them. They are made two ways, so that
a signer that re-creates the parent differently from those tools fails here:

- through tpm2-pytss (`TSSPrivKey.create_rsa` / `create_ecc`, noDA keys, and one EC key
  without noDA so that wrong passwords reach the dictionary-attack counter);
- through OpenSSL's tpm2 provider (tpm2-openssl), the tool users actually run.

swtpm serves one TCTI connection at a time: every helper here opens the TPM, does its work and
closes it, so that the CLI under test can connect.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, write_pem
from tests.tokens.processes import missing_binaries, run, stop_process
from tests.tokens.tpm import clear_lockout, lockout_counter, start_swtpm

__all__ = ["TpmKeyFile", "TpmWithKeyFiles", "missing_tpmkey_requirements", "start_tpm_with_key_files"]

TPM2_OPENSSL_PROVIDER = "/usr/lib/x86_64-linux-gnu/ossl-modules/tpm2.so"
_BINARIES = ("swtpm", "tpm2_getcap", "tpm2_dictionarylockout", "tpm2_flushcontext", "openssl",
             TPM2_OPENSSL_PROVIDER)


def missing_tpmkey_requirements() -> list[str]:
    """What is missing of swtpm, tpm2-tools, tpm2-openssl and tpm2-pytss, for a clean skip."""
    missing = missing_binaries(*_BINARIES)
    try:
        import tpm2_pytss  # noqa: F401
    except ImportError:
        missing.append("tpm2-pytss (pip install tpm2-pytss)")
    return missing


@dataclass(frozen=True)
class TpmKeyFile:
    """One TSS2 PEM key file and the certificate issued for its public part."""

    name: str
    path: Path
    password: str | None  # None: emptyAuth
    certificate: x509.Certificate
    certificate_path: Path
    dictionary_attack_protected: bool  # False for noDA keys: wrong passwords are not counted


@dataclass
class TpmWithKeyFiles:
    """A running swtpm, its TCTI, a CA and the key files made in it (`keys[name]`)."""

    tcti: str
    directory: Path
    ca: CertificateAuthority
    ca_path: Path
    keys: dict[str, TpmKeyFile] = field(default_factory=dict)
    swtpm: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    # Attestation: a persistent AK (restricted ECDSA P-256 signing key) and its certificate
    # from a test attestation CA (`make_attestation_key`).
    ak_handle: int | None = None
    ak_certificate_path: Path | None = None
    attestation_ca: CertificateAuthority | None = None
    attestation_ca_path: Path | None = None

    @property
    def tools_env(self) -> dict[str, str]:
        return {"TPM2TOOLS_TCTI": self.tcti}

    def subprocess_env(self, **extra: str) -> dict[str, str]:
        """os.environ with RAH_TPM_TCTI pointing at this TPM and no RAH_TPM_KEY_PASSWORD."""
        env = {**os.environ, "RAH_TPM_TCTI": self.tcti, **extra}
        if "RAH_TPM_KEY_PASSWORD" not in extra:
            env.pop("RAH_TPM_KEY_PASSWORD", None)
        return env

    def esapi(self) -> Any:
        """A new ESAPI context on this TPM; close it (use `with`) before the CLI runs."""
        from tpm2_pytss import ESAPI

        return ESAPI(self.tcti)

    def lockout_counter(self) -> int:
        return lockout_counter(self.tools_env)

    def clear_lockout(self) -> None:
        clear_lockout(self.tools_env)

    def transient_handles(self) -> list[str]:
        """The TPM's loaded transient objects (tpm2_getcap handles-transient): a signer that
        closed properly leaves none."""
        out = run(["tpm2_getcap", "handles-transient"], env=self.tools_env, timeout=10).stdout
        return [line.strip("- ").strip() for line in out.splitlines() if line.strip()]

    def flush_transient(self) -> None:
        run(["tpm2_flushcontext", "-t"], env=self.tools_env, timeout=10)

    def add_key(self, name: str, make: Callable[[Path], None], password: str | None, *,
                dictionary_attack_protected: bool) -> TpmKeyFile:
        """Run `make(path)` to write a TSS2 PEM key file, then issue a certificate for it."""
        from tpm2_pytss.tsskey import TSSPrivKey

        path = self.directory / f"{name}.tss2.pem"
        make(path)
        key = TSSPrivKey.from_pem(path.read_bytes())
        public: Any = serialization.load_der_public_key(key.public.publicArea.to_der())
        cert = self.ca.issue_leaf(public, f"tpmkey-{name}")
        self.keys[name] = TpmKeyFile(
            name=name, path=path, password=password, certificate=cert,
            certificate_path=write_pem(self.directory / f"{name}.crt.pem", cert),
            dictionary_attack_protected=dictionary_attack_protected,
        )
        return self.keys[name]

    def stop(self) -> None:
        if self.swtpm is not None:
            stop_process(self.swtpm)


def _pytss_maker(tpm: TpmWithKeyFiles, kind: str, password: str | None, *, noda: bool = True,
                 restricted: bool = False) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        from tpm2_pytss.constants import TPM2_ALG, TPMA_OBJECT
        from tpm2_pytss.tsskey import TSSPrivKey, _ecc_template, _rsa_template

        secret = password.encode() if password else None
        with tpm.esapi() as ectx:
            if noda and not restricted:
                create = TSSPrivKey.create_rsa if kind == "rsa" else TSSPrivKey.create_ecc
                key = create(ectx, password=secret)
            else:
                # tpm2-pytss's own templates, altered: without noDA (wrong passwords count), or
                # restricted to signing with RSASSA-SHA256 (the TPM must hash what it signs).
                template = type(_rsa_template).unmarshal((_rsa_template if kind == "rsa" else _ecc_template).marshal())[0]
                if kind == "rsa":
                    template.parameters.rsaDetail.keyBits = 2048
                if not noda:
                    template.objectAttributes &= ~TPMA_OBJECT.NODA
                if restricted:
                    template.objectAttributes &= ~TPMA_OBJECT.DECRYPT
                    template.objectAttributes |= TPMA_OBJECT.RESTRICTED
                    template.parameters.rsaDetail.scheme.scheme = TPM2_ALG.RSASSA
                    template.parameters.rsaDetail.scheme.details.anySig.hashAlg = TPM2_ALG.SHA256
                key = TSSPrivKey.create(ectx, template, password=secret)
        path.write_bytes(key.to_pem())

    return make


AK_HANDLE = 0x81010002


def make_attestation_key(tpm: TpmWithKeyFiles, ca: CertificateAuthority, handle: int = AK_HANDLE,
                         name: str = "ak") -> Path:
    """Create an AK in the endorsement hierarchy (a primary: restricted, ECDSA-SHA256, fixedTPM,
    empty password), make it persistent at `handle`, and have `ca` certify it; returns the PEM
    path of the AK's certificate followed by the CA's."""
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_ECC, TPMA_OBJECT
    from tpm2_pytss.types import (
        TPM2B_DATA,
        TPM2B_PUBLIC,
        TPM2B_SENSITIVE_CREATE,
        TPML_PCR_SELECTION,
        TPMS_ECC_PARMS,
        TPMT_ECC_SCHEME,
        TPMT_KDF_SCHEME,
        TPMT_PUBLIC,
        TPMT_SYM_DEF_OBJECT,
        TPMU_PUBLIC_PARMS,
    )

    scheme = TPMT_ECC_SCHEME(scheme=TPM2_ALG.ECDSA)
    scheme.details.ecdsa.hashAlg = TPM2_ALG.SHA256
    template = TPM2B_PUBLIC(publicArea=TPMT_PUBLIC(
        type=TPM2_ALG.ECC, nameAlg=TPM2_ALG.SHA256,
        objectAttributes=TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.NODA,
        authPolicy=b"",
        parameters=TPMU_PUBLIC_PARMS(eccDetail=TPMS_ECC_PARMS(
            symmetric=TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL), scheme=scheme,
            curveID=TPM2_ECC.NIST_P256, kdf=TPMT_KDF_SCHEME(scheme=TPM2_ALG.NULL))),
    ))
    with tpm.esapi() as ectx:
        primary, public, *_ = ectx.create_primary(TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.RH_ENDORSEMENT,
                                                  TPM2B_DATA(), TPML_PCR_SELECTION())
        persistent = ectx.evict_control(ESYS_TR.RH_OWNER, primary, handle)
        ectx.tr_close(persistent)
        ectx.flush_context(primary)
    ak_public: Any = serialization.load_der_public_key(public.publicArea.to_der())
    certificate = ca.issue_leaf(ak_public, f"tpm-ak-{name}", key_usage=("digital_signature",))
    return write_pem(tpm.directory / f"{name}.crt.pem", certificate, ca.certificate)


def _imported_maker(tpm: TpmWithKeyFiles) -> Callable[[Path], None]:
    """A P-256 key made in software and put into the TPM with TPM2_Import (what tpm2_import
    does): it signs like any TPM key, but fixedTPM, fixedParent and sensitiveDataOrigin are
    clear, and the TPM says so in every certification of it."""
    def make(path: Path) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec
        from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_OBJECT
        from tpm2_pytss.tsskey import TSSPrivKey
        from tpm2_pytss.types import (
            TPM2B_DATA,
            TPM2B_PUBLIC,
            TPM2B_SENSITIVE,
            TPM2B_SENSITIVE_CREATE,
            TPML_PCR_SELECTION,
            TPMT_SYM_DEF_OBJECT,
        )
        from tpm2_pytss.utils import wrap

        from rolesanywhere_hsm.signers.tpmkey import _primary_template

        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        public = TPM2B_PUBLIC.from_pem(pem, objectAttributes=TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.SIGN_ENCRYPT
                                       | TPMA_OBJECT.NODA)
        sensitive = TPM2B_SENSITIVE.from_pem(pem)
        with tpm.esapi() as ectx:
            parent, parent_public, *_ = ectx.create_primary(TPM2B_SENSITIVE_CREATE(), _primary_template(True),
                                                            ESYS_TR.RH_OWNER, TPM2B_DATA(), TPML_PCR_SELECTION())
            try:
                encryption_key, duplicate, seed = wrap(parent_public.publicArea, public, sensitive)
                private = ectx.import_(parent, encryption_key, public, duplicate, seed,
                                       TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL))
            finally:
                ectx.flush_context(parent)
        path.write_bytes(TSSPrivKey(private, public, empty_auth=True, parent=0x40000001).to_pem())

    return make


def _openssl_maker(tpm: TpmWithKeyFiles, kind: str, password: str | None) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        options = ["-algorithm", "RSA", "-pkeyopt", "bits:2048"] if kind == "rsa" else \
            ["-algorithm", "EC", "-pkeyopt", "group:P-256"]
        if password:
            options += ["-pkeyopt", f"user-auth:{password}"]
        run(["openssl", "genpkey", "-provider", "tpm2", *options, "-out", str(path)],
            env={"TPM2OPENSSL_TCTI": tpm.tcti}, timeout=60)

    return make


def start_tpm_with_key_files(directory: Path, ca: CertificateAuthority) -> TpmWithKeyFiles:
    """Start swtpm under `directory` and make the key files the tests use:

    - "rsa": RSA-2048, no password (tpm2-pytss); "ec": P-256, password "ec-pass" (tpm2-pytss,
      noDA); "ec-da": P-256, password "da-pass", dictionary-attack protected (tpm2-pytss);
    - "ossl-rsa": RSA-2048, no password, and "ossl-ec": P-256 with password "ossl-pass"
      (OpenSSL's tpm2 provider; its keys are dictionary-attack protected);
    - "rsa-restricted": a restricted RSASSA-SHA256 signing key, no password (tpm2-pytss);
    - "ec-imported": a P-256 key made in software and imported (TPM2_Import), no password;
    and an AK at AK_HANDLE certified by a test attestation CA (`attestation_ca`).
    """
    directory.mkdir(parents=True, exist_ok=True)
    swtpm, sock = start_swtpm(directory)
    tpm = TpmWithKeyFiles(tcti=f"swtpm:path={sock}", directory=directory, ca=ca,
                          ca_path=write_pem(directory / "ca.pem", ca.certificate), swtpm=swtpm)
    try:
        tpm.add_key("rsa", _pytss_maker(tpm, "rsa", None), None, dictionary_attack_protected=False)
        tpm.add_key("ec", _pytss_maker(tpm, "ec", "ec-pass"), "ec-pass", dictionary_attack_protected=False)
        tpm.add_key("ec-da", _pytss_maker(tpm, "ec", "da-pass", noda=False), "da-pass",
                    dictionary_attack_protected=True)
        tpm.add_key("ossl-rsa", _openssl_maker(tpm, "rsa", None), None, dictionary_attack_protected=True)
        tpm.add_key("ossl-ec", _openssl_maker(tpm, "ec", "ossl-pass"), "ossl-pass",
                    dictionary_attack_protected=True)
        tpm.add_key("rsa-restricted", _pytss_maker(tpm, "rsa", None, restricted=True), None,
                    dictionary_attack_protected=False)
        tpm.add_key("ec-imported", _imported_maker(tpm), None, dictionary_attack_protected=False)
        tpm.attestation_ca = CertificateAuthority.create("rolesanywhere-hsm Test TPM Attestation CA", "p256")
        tpm.attestation_ca_path = write_pem(directory / "attestation-ca.pem", tpm.attestation_ca.certificate)
        tpm.ak_certificate_path = make_attestation_key(tpm, tpm.attestation_ca)
        tpm.ak_handle = AK_HANDLE
    except BaseException:
        tpm.stop()
        raise
    return tpm
