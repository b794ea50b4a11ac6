"""ML-DSA file keys (AWS4-X509-MLDSA: pure ML-DSA over the string to sign, empty context):
signing, key formats, the emulator over real HTTP, and the drop-in commands."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from rolesanywhere_hsm.client import RetryPolicy
from rolesanywhere_hsm.session import create_session
from rolesanywhere_hsm._dev.devpki import MLDSA_KEY_KINDS, CertificateAuthority, new_private_key, write_pem
from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
from rolesanywhere_hsm.errors import KeyLoadError
from rolesanywhere_hsm.signers import ALGORITHM_MLDSA, SignerConfig, load_signer
from rolesanywhere_hsm.x509 import certificate_data, certificate_info
from tests.clirunner import run_cli

ROOT = Path(__file__).resolve().parents[2]
FAST = RetryPolicy(attempts=1, base_delay=0.01, max_delay=0.02)
PASSWORD = "correct horse"


@dataclass
class MlDsaFiles:
    key: Any
    cert: Any
    certificate: Path
    pem_key: Path
    der_key: Path
    encrypted_key: Path
    chain: Path | None


@pytest.fixture(scope="module")
def mldsa_files(tmp_path_factory: pytest.TempPathFactory, root_ca: CertificateAuthority,
                intermediate_ca: CertificateAuthority) -> dict[tuple[str, bool], MlDsaFiles]:
    """Per kind, a leaf issued by the root directly (False) and by the intermediate (True)."""
    directory = tmp_path_factory.mktemp("mldsa")
    out = {}
    for kind in MLDSA_KEY_KINDS:
        key = new_private_key(kind)
        for via_intermediate in (False, True):
            issuer = intermediate_ca if via_intermediate else root_ca
            cert = issuer.issue_leaf(key.public_key(), f"workload-{kind}")
            name = f"{kind}-{'int' if via_intermediate else 'root'}"
            der_key = directory / f"{name}.der"
            der_key.write_bytes(key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
            encrypted = directory / f"{name}.enc.pem"
            encrypted.write_bytes(key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(PASSWORD.encode())))
            out[kind, via_intermediate] = MlDsaFiles(
                key=key, cert=cert,
                certificate=write_pem(directory / f"{name}.crt", cert),
                pem_key=write_pem(directory / f"{name}.key", key, mode=0o600),
                der_key=der_key, encrypted_key=encrypted,
                chain=write_pem(directory / "intermediate.crt", intermediate_ca.certificate)
                if via_intermediate else None,
            )
    return out


@pytest.fixture
def server(root_ca: CertificateAuthority) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig.for_certificates([root_ca.certificate])) as emulator:
        yield emulator


@pytest.mark.parametrize("kind", MLDSA_KEY_KINDS)
def test_file_signer_signs_pure_ml_dsa(kind: str, mldsa_files: dict[Any, MlDsaFiles]) -> None:
    files = mldsa_files[kind, False]
    for key_path in (files.pem_key, files.der_key):
        with load_signer(SignerConfig(str(files.certificate), str(key_path))) as signer:
            assert signer.algorithm == ALGORITHM_MLDSA == "AWS4-X509-MLDSA"
            signature = signer.sign(b"string to sign")
    public = files.cert.public_key()
    public.verify(signature, b"string to sign")  # pure ML-DSA, empty context
    with pytest.raises(InvalidSignature):
        public.verify(signature, b"string to sign", b"ctx")  # a context would change it


def test_the_certificate_reports_its_parameter_set(mldsa_files: dict[Any, MlDsaFiles]) -> None:
    for kind, level in zip(MLDSA_KEY_KINDS, ("44", "65", "87")):
        der = mldsa_files[kind, False].cert.public_bytes(serialization.Encoding.DER)
        info = certificate_info(der)
        assert (info.key_type, info.parameter_set, info.algorithm) == ("ML-DSA", f"ML-DSA-{level}", ALGORITHM_MLDSA)
        data = certificate_data(der)
        assert data["keyType"] == "MLDSA" and data["supportedAlgorithms"] == ["MLDSA"]
        assert data["serialNumber"] == str(mldsa_files[kind, False].cert.serial_number)


def test_encrypted_key_needs_the_password_once(mldsa_files: dict[Any, MlDsaFiles]) -> None:
    files = mldsa_files["mldsa65", False]
    config = SignerConfig(str(files.certificate), str(files.encrypted_key), pkcs8_password=PASSWORD)
    with load_signer(config) as signer:
        files.cert.public_key().verify(signer.sign(b"m"), b"m")
    with pytest.raises(KeyLoadError, match="wrong password"):
        load_signer(SignerConfig(str(files.certificate), str(files.encrypted_key), pkcs8_password="nope"))


def test_a_key_of_another_certificate_is_refused(mldsa_files: dict[Any, MlDsaFiles]) -> None:
    with pytest.raises(KeyLoadError, match="does not belong"):
        load_signer(SignerConfig(str(mldsa_files["mldsa44", False].certificate),
                                 str(mldsa_files["mldsa65", False].pem_key)))


@pytest.mark.parametrize("via_intermediate", [False, True], ids=["root", "intermediate"])
@pytest.mark.parametrize("kind", ["mldsa44", "mldsa65"])
def test_ml_dsa_keys_get_credentials_from_the_emulator(
    kind: str, via_intermediate: bool, server: Emulator, mldsa_files: dict[Any, MlDsaFiles]
) -> None:
    files = mldsa_files[kind, via_intermediate]
    config = SignerConfig(str(files.certificate), str(files.pem_key),
                          intermediates=str(files.chain) if files.chain else None)
    credentials = create_session(config, trust_anchor_arn=server.trust_anchor_arn, profile_arn=server.profile_arn,
                                 role_arn=server.role_arn, endpoint=server.url, retry=FAST)
    assert credentials.access_key_id == server.last_issued.access_key_id
    request = server.last_request
    assert request.header("Authorization").startswith("AWS4-X509-MLDSA Credential=")
    assert bool(request.header("X-Amz-X509-Chain")) is via_intermediate


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAH_"))}
    return run_cli(*args, env=env, cwd=ROOT, text=False)


def test_credential_process_with_an_encrypted_ml_dsa_key_and_pkcs8_password(
    server: Emulator, mldsa_files: dict[Any, MlDsaFiles]
) -> None:
    files = mldsa_files["mldsa65", True]
    result = run("credential-process", "--certificate", str(files.certificate), "--private-key",
                 str(files.encrypted_key), "--pkcs8-password", PASSWORD, "--intermediates", str(files.chain),
                 "--trust-anchor-arn", server.trust_anchor_arn, "--profile-arn", server.profile_arn,
                 "--role-arn", server.role_arn, "--endpoint", server.url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["AccessKeyId"] == server.last_issued.access_key_id
    assert PASSWORD.encode() not in result.stderr


def test_sign_string_and_read_certificate_data_with_ml_dsa(mldsa_files: dict[Any, MlDsaFiles]) -> None:
    import hashlib

    files = mldsa_files["mldsa44", False]
    out = run("sign-string", "--certificate", str(files.certificate), "--private-key", str(files.pem_key),
              "--format", "bin", "--digest", "SHA512")
    assert out.returncode == 0, out.stderr
    raw = files.cert.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    message = b"AWS Roles Anywhere Credential Helper Signing Test1" + hashlib.sha256(b"IAM RA" + raw).digest()
    files.cert.public_key().verify(out.stdout, message)  # pure ML-DSA: --digest does not apply
    data = run("read-certificate-data", "--certificate", str(files.certificate))
    assert data.returncode == 0, data.stderr
    assert json.loads(data.stdout)["keyType"] == "MLDSA"


def test_the_test_ca_can_be_ml_dsa_all_the_way_down() -> None:
    """An ML-DSA root issues an ML-DSA intermediate, which issues ML-DSA and EC leaves: each
    signature verifies with the issuer's key, key identifiers link, and the certificates parse."""
    from cryptography import x509 as cx

    root = CertificateAuthority.create("ML-DSA Root", "mldsa65")
    intermediate = root.issue_intermediate("ML-DSA Intermediate", "mldsa44")
    leaves = [intermediate.issue_leaf(new_private_key(kind).public_key()) for kind in ("mldsa87", "p256")]
    for cert, issuer in [(root.certificate, root), (intermediate.certificate, root),
                         (leaves[0], intermediate), (leaves[1], intermediate)]:
        issuer.key.public_key().verify(cert.signature, cert.tbs_certificate_bytes)
        assert cert.signature_algorithm_oid.dotted_string == {
            "mldsa65": "2.16.840.1.101.3.4.3.18", "mldsa44": "2.16.840.1.101.3.4.3.17"
        }["mldsa65" if issuer is root else "mldsa44"]
        assert cert.issuer == issuer.certificate.subject
        if cert is not root.certificate:  # a self-signed root carries no authority key identifier
            aki = cert.extensions.get_extension_for_class(cx.AuthorityKeyIdentifier).value.key_identifier
            ski = issuer.certificate.extensions.get_extension_for_class(cx.SubjectKeyIdentifier).value.digest
            assert aki == ski
    info = certificate_info(leaves[0].public_bytes(serialization.Encoding.DER))
    assert (info.key_type, info.parameter_set) == ("ML-DSA", "ML-DSA-87")
    with pytest.raises(ValueError, match="CRL"):
        root.issue_crl([1])
