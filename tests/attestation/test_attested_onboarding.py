"""End to end on the virtual YubiKey through ykcs11: keygen -> csr --attest -> a test CA that
issues only for attested requests (and refuses the same key's unattested request) ->
import-certificate -> credential-process gets credentials from the emulator, whose session
tags carry the OU that says "attested"; and the same for a TSS2 key file attested by the
software TPM's AK (OU=attested-tpm), where the imported key's request is refused.

The test CA is the dev PKI (devpki.CertificateAuthority) with the attestation rule of
rolesanywhere_hsm.attestation.ca, the function `dev-ca sign --require-attestation` calls; the TPM
path runs that command as a user would."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from rolesanywhere_hsm.attestation.ca import issue_attested, require_attested
from rolesanywhere_hsm.attestation.verify import load_certificates
from rolesanywhere_hsm._dev.devpki import CertificateAuthority, save_test_ca, write_pem
from rolesanywhere_hsm.emulator import Emulator
from rolesanywhere_hsm.errors import AttestationUnavailableError
from tests.attestation.conftest import generate
from tests.provision.flow import cli, credential_process, ok
from tests.tokens.tpmkey import TpmWithKeyFiles
from tests.tokens.yubikey import VirtualYubiKey


@pytest.mark.yubikey
def test_attested_request_to_credentials(card: VirtualYubiKey, management_key_file: str,
                                         root_ca: CertificateAuthority, emulator: Emulator, tmp_path: Path) -> None:
    key_uri = generate(card, management_key_file, "07")
    env = card.subprocess_env(card.ykcs11_module, pin=True)
    roots = load_certificates(card.attestation_root_path.read_bytes(), "roots")

    plain = tmp_path / "plain.csr"
    ok(cli(env, "csr", "--private-key", key_uri, "--subject", "CN=attested-workload", "--out", str(plain)))
    with pytest.raises(AttestationUnavailableError, match="carries no key attestation"):
        require_attested(plain.read_bytes(), roots)

    attested = tmp_path / "attested.csr"
    ok(cli(env, "csr", "--private-key", key_uri, "--subject", "CN=attested-workload", "--attest",
           "--out", str(attested)))
    certificate = issue_attested(root_ca, attested.read_bytes(), roots)
    cert_path = write_pem(tmp_path / "leaf.pem", certificate)
    cert_uri = ok(cli(env, "import-certificate", "--private-key", key_uri, "--certificate", str(cert_path),
                      "--management-key-source", management_key_file))

    creds = credential_process(env, emulator, cert_uri)
    assert creds["AccessKeyId"] == emulator.last_issued.access_key_id
    assert emulator.last_issued.leaf_serial == certificate.serial_number
    assert emulator.last_issued.session_tags["x509Subject/OU"] == "attested-yubikey"


@pytest.mark.tpmkey
def test_attested_tpm_key_to_credentials(tpmkeys: TpmWithKeyFiles, root_ca: CertificateAuthority,
                                         emulator: Emulator, tmp_path: Path) -> None:
    """The same path for a TSS2 key file: csr --attest with the AK -> the attesting CA issues
    OU=attested-tpm -> credential-process signs in the TPM; the imported key is refused."""
    env = tpmkeys.subprocess_env()
    ak = ["--ak-handle", hex(tpmkeys.ak_handle or 0), "--ak-certificate", str(tpmkeys.ak_certificate_path)]
    roots = load_certificates((tpmkeys.attestation_ca_path or Path()).read_bytes(), "roots")
    key = tpmkeys.keys["rsa"]
    request = tmp_path / "tpm.csr"
    ok(cli(env, "csr", "--private-key", str(key.path), "--subject", "CN=tpm-workload", "--attest", *ak,
           "--out", str(request)))
    # The test CA as a user runs it: `dev-ca sign --require-attestation ROOTS`.
    save_test_ca(root_ca, tmp_path / "ca")
    roots_path = str(tpmkeys.attestation_ca_path)
    cert_path = tmp_path / "tpm-leaf.pem"
    ok(cli(env, "dev-ca", "sign", "--ca", str(tmp_path / "ca"), "--csr", str(request), "--out", str(cert_path),
           "--require-attestation", roots_path))
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "attested-tpm"
    result = cli(env, "credential-process", "--certificate", str(cert_path), "--private-key", str(key.path),
                 "--trust-anchor-arn", emulator.trust_anchor_arn, "--profile-arn", emulator.profile_arn,
                 "--role-arn", emulator.role_arn, "--endpoint", emulator.url)
    assert ok(result)
    assert emulator.last_issued.session_tags["x509Subject/OU"] == "attested-tpm"

    plain = tmp_path / "imported.csr"
    ok(cli(env, "csr", "--private-key", str(tpmkeys.keys["ec-imported"].path), "--subject", "CN=x",
           "--out", str(plain)))
    with pytest.raises(AttestationUnavailableError):
        require_attested(plain.read_bytes(), roots)
    refused = cli(env, "dev-ca", "sign", "--ca", str(tmp_path / "ca"), "--csr", str(plain),
                  "--out", str(tmp_path / "refused.pem"), "--require-attestation", roots_path)
    assert refused.returncode == 10, refused.stderr
    assert "attestation" in refused.stderr and len(refused.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "refused.pem").exists()
