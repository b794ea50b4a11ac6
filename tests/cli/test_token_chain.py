"""The chain from the token (issue: HSM partitions and cards hold the issuing CAs beside the
leaf): with no --intermediates, exactly the intermediate on the leaf's issuer path is sent,
not the root and not an unrelated CA that sit on the same token. Checked in the emulator's
record of the request, on SoftHSM and on the software TPM."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, write_pem
from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
from rolesanywhere_hsm._dev.softhsm import SoftHsmToken
from tests.fixtures.softhsm import SOFTHSM_PIN
from tests.tokens.tpm import TpmToken
from tests.clirunner import run_cli

ROOT = Path(__file__).parents[2]


def credential_process(server: Emulator, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = ["credential-process", *args,
               "--trust-anchor-arn", server.trust_anchor_arn, "--profile-arn", server.profile_arn,
               "--role-arn", server.role_arn, "--endpoint", server.url]
    return run_cli(*command, env=env, cwd=ROOT)


def sent_chain(server: Emulator) -> list[bytes]:
    header = server.requests[-1].header("x-amz-x509-chain")
    return [base64.b64decode(part) for part in header.split(",")] if header else []


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture
def root_server(root_ca: CertificateAuthority) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig.for_certificates([root_ca.certificate])) as emulator:
        yield emulator


@pytest.mark.softhsm
def test_softhsm_sends_exactly_the_intermediate_from_the_token(
    softhsm_token: SoftHsmToken, root_ca: CertificateAuthority, intermediate_ca: CertificateAuthority,
    root_server: Emulator, tmp_path: Path,
) -> None:
    unrelated = CertificateAuthority.create("Unrelated CA on the token", "p256")
    for ca, label, ident in ((root_ca, "root-ca", b"\xc0"), (intermediate_ca, "issuing-ca", b"\xc1"),
                             (unrelated, "unrelated-ca", b"\xc2")):
        softhsm_token.add_certificate(ca.certificate, label, ident)
    env = dict(os.environ, **softhsm_token.env, RAH_PKCS11_MODULE=softhsm_token.module,
               RAH_PKCS11_PIN=SOFTHSM_PIN)
    uri = softhsm_token.uri_for("ec-p256", type="cert")

    result = credential_process(root_server, env, "--certificate", uri, "--debug")
    assert result.returncode == 0, result.stderr
    assert sent_chain(root_server) == [der(intermediate_ca.certificate)]
    assert "chain from token 'rah-test': " in result.stderr and "(root, not sent)" in result.stderr

    # The switch turns it off: no chain, and the service cannot link the leaf to the root.
    result = credential_process(root_server, env, "--certificate", uri, "--no-token-chain")
    assert result.returncode == 6 and sent_chain(root_server) == []

    # --intermediates wins: exactly what the file gives on the path (here the unrelated CA
    # is dropped, and the token's certificates are not looked at).
    bundle = write_pem(tmp_path / "bundle.pem", unrelated.certificate, intermediate_ca.certificate)
    result = credential_process(root_server, env, "--certificate", uri, "--intermediates", str(bundle))
    assert result.returncode == 0, result.stderr
    assert sent_chain(root_server) == [der(intermediate_ca.certificate)]


@pytest.mark.tpm
def test_tpm_sends_exactly_the_intermediate_from_the_token(tpm: TpmToken, tmp_path: Path) -> None:
    """A second certificate for the TPM's EC key, issued by an intermediate of the TPM test CA,
    stored with the intermediate, the root and an unrelated CA; removed afterwards (the TPM
    token is shared by the session)."""
    intermediate = tpm.ca.issue_intermediate("TPM Test Intermediate", "p256")
    unrelated = CertificateAuthority.create("Unrelated CA on the TPM", "p256")
    leaf = intermediate.issue_leaf(tpm.ec.certificate.public_key(), "tpm-ec-under-intermediate")
    objects = [(leaf, "chained-leaf", "e1"), (intermediate.certificate, "chain-intermediate", "e2"),
               (tpm.ca.certificate, "chain-root", "e3"), (unrelated.certificate, "chain-unrelated", "e4")]
    tool = ["pkcs11-tool", "--module", tpm.module, "--token-label", tpm.token_label]
    env = tpm.subprocess_env(pin=True)
    try:
        for cert, label, ident in objects:
            path = tmp_path / f"{label}.der"
            path.write_bytes(der(cert))
            subprocess.run([*tool, "--login", "--pin", tpm.user_pin, "--write-object", str(path),
                            "--type", "cert", "--id", ident, "--label", label],
                           env=env, check=True, capture_output=True, timeout=60)
        with Emulator(EmulatorConfig.for_certificates([tpm.ca.certificate])) as server:
            result = credential_process(
                server, env, "--certificate", f"pkcs11:token={tpm.token_label};object=chained-leaf",
                "--private-key", tpm.uri_for("ec", type="private"))
            assert result.returncode == 0, result.stderr
            assert sent_chain(server) == [der(intermediate.certificate)]
            assert server.last_issued.leaf_serial == leaf.serial_number
    finally:
        for _cert, label, _ident in objects:
            subprocess.run([*tool, "--login", "--pin", tpm.user_pin, "--delete-object", "--type", "cert",
                            "--label", label], env=env, capture_output=True, timeout=60)
