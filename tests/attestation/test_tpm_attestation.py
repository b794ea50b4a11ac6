"""TPM key attestation on swtpm: a TSS2 key file made in the TPM is certified (TPM2_Certify) by
a persistent AK whose certificate comes from a test attestation CA, and verified; an imported
key, a statement from an AK the roots do not cover, and an altered statement are refused."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography import x509

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, write_pem
from tests.provision.flow import cli, ok
from tests.tokens.tpmkey import TpmWithKeyFiles

pytestmark = pytest.mark.tpmkey


def attest_args(tpm: TpmWithKeyFiles) -> list[str]:
    return ["--ak-handle", hex(tpm.ak_handle or 0), "--ak-certificate", str(tpm.ak_certificate_path)]


@pytest.mark.parametrize("name", ["ec", "ossl-rsa"])
def test_key_made_in_the_tpm_is_attested_and_verified(tpmkeys: TpmWithKeyFiles, name: str, tmp_path: Path) -> None:
    key = tpmkeys.keys[name]
    env = tpmkeys.subprocess_env(**({"RAH_TPM_KEY_PASSWORD": key.password} if key.password else {}))
    statement = tmp_path / "statement.json"
    ok(cli(env, "attest", "--private-key", str(key.path), *attest_args(tpmkeys), "--out", str(statement)))
    fields = json.loads(statement.read_text())
    assert fields["fmt"] == "tpm" and fields["attStmt"]["ver"] == "2.0" and fields["attStmt"]["alg"] == -7
    assert set(fields["attStmt"]) == {"ver", "alg", "x5c", "sig", "certInfo", "pubArea"}
    result = cli(env, "verify-attestation", "--attestation", str(statement), "--certificate",
                 str(key.certificate_path), "--roots", str(tpmkeys.attestation_ca_path))
    assert result.returncode == 0, result.stderr
    assert "attestation verified: TPM key" in result.stdout
    attributes = next(line for line in result.stdout.splitlines() if line.startswith("attributes: ")).split()[1:]
    assert {"fixedTPM", "fixedParent", "sensitiveDataOrigin"} <= set(attributes)
    assert "checks passed: chain, signature, public-key, attributes" in result.stdout


def test_csr_carries_the_tpm_statement(tpmkeys: TpmWithKeyFiles, tmp_path: Path) -> None:
    key = tpmkeys.keys["rsa"]
    env = tpmkeys.subprocess_env()
    request = tmp_path / "req.pem"
    ok(cli(env, "csr", "--private-key", str(key.path), "--subject", "CN=tpm-attested", "--attest",
           *attest_args(tpmkeys), "--out", str(request)))
    csr = x509.load_pem_x509_csr(request.read_bytes())
    assert csr.is_signature_valid
    extension = csr.extensions.get_extension_for_oid(
        x509.ObjectIdentifier("2.25.319063195431296546655562390566376265888"))
    assert json.loads(extension.value.value)["fmt"] == "tpm"
    verdict = json.loads(ok(cli(env, "verify-attestation", "--csr", str(request), "--roots",
                                str(tpmkeys.attestation_ca_path), "--json")))
    assert verdict["ok"] is True and verdict["kind"] == "tpm"
    assert "sensitiveDataOrigin" in verdict["facts"]["attributes"]


def test_imported_key_is_refused(tpmkeys: TpmWithKeyFiles, tmp_path: Path) -> None:
    from rolesanywhere_hsm.attestation.tpm import attest_key_file

    key = tpmkeys.keys["ec-imported"]
    env = tpmkeys.subprocess_env()
    result = cli(env, "attest", "--private-key", str(key.path), *attest_args(tpmkeys))
    assert result.returncode == 10 and result.stdout == ""
    assert "was imported into the TPM, not generated inside it" in result.stderr

    # The statement itself (as a CA would get it from a client that does not refuse it).
    statement = tmp_path / "imported.json"
    statement.write_bytes(attest_key_file(str(key.path), hex(tpmkeys.ak_handle or 0),
                                          str(tpmkeys.ak_certificate_path), tcti=tpmkeys.tcti))
    result = cli(env, "verify-attestation", "--attestation", str(statement), "--certificate",
                 str(key.certificate_path), "--roots", str(tpmkeys.attestation_ca_path), "--json")
    assert result.returncode == 10
    verdict = json.loads(result.stdout)
    assert verdict["reason"] == "policy" and verdict["checks_passed"] == ["chain", "signature", "public-key"]
    assert "imported into the TPM, not generated inside it" in result.stderr
    assert "fixedTPM, fixedParent, sensitiveDataOrigin not set" in result.stderr


def test_foreign_ak_and_altered_statement_are_refused(tpmkeys: TpmWithKeyFiles, tmp_path: Path) -> None:
    key = tpmkeys.keys["rsa"]
    env = tpmkeys.subprocess_env()
    statement = tmp_path / "statement.json"
    ok(cli(env, "attest", "--private-key", str(key.path), *attest_args(tpmkeys), "--out", str(statement)))
    other_root = write_pem(tmp_path / "other.pem", CertificateAuthority.create("Other TPM CA").certificate)
    result = cli(env, "verify-attestation", "--attestation", str(statement), "--certificate",
                 str(key.certificate_path), "--roots", str(other_root))
    assert result.returncode == 10 and "does not chain to the given roots" in result.stderr

    fields = json.loads(statement.read_text())
    info = bytearray(base64.b64decode(fields["attStmt"]["certInfo"]))
    info[-1] ^= 0x01  # the certified name's last byte
    fields["attStmt"]["certInfo"] = base64.b64encode(bytes(info)).decode()
    altered = tmp_path / "altered.json"
    altered.write_text(json.dumps(fields))
    result = cli(env, "verify-attestation", "--attestation", str(altered), "--certificate",
                 str(key.certificate_path), "--roots", str(tpmkeys.attestation_ca_path), "--debug")
    assert result.returncode == 10
    assert "The AK's signature over the TPM statement does not verify" in result.stderr
    assert "RAH-ATT-003" in result.stderr
