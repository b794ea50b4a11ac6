"""doctor renders what `locate` found (each finding with its stable code) instead of checking it
again: every key finding in one run, and a chain locate could not build as the chain's line
while the key is still tested. Key files and the emulator over loopback."""

from __future__ import annotations

from pathlib import Path

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, new_private_key, write_pem
from rolesanywhere_hsm.doctor import FAIL, PASS, SKIP
from rolesanywhere_hsm.doctor.key import findings_check
from rolesanywhere_hsm.emulator import Emulator
from rolesanywhere_hsm.errors import CertificateError, KeyLoadError
from rolesanywhere_hsm.signers.locate import Finding
from tests.doctor.test_doctor_runs import doctor


def test_every_key_finding_of_locate_is_in_the_key_line_with_its_code(
        emulator: Emulator, root_ca: CertificateAuthority, tmp_path: Path) -> None:
    """A CA certificate as the leaf AND a key that is not its: locate sees both without a
    secret; the key line names both (before, only the first)."""
    certificate = write_pem(tmp_path / "ca.pem", root_ca.certificate)
    key = write_pem(tmp_path / "k.pem", new_private_key("p256"), mode=0o600)
    checks = doctor(emulator, str(certificate), str(key))
    line = checks["key"]
    assert line.status == FAIL and line.code == "RAH-CERT-001"
    assert "is a CA certificate" in line.message
    assert "Also [RAH-KEY-001]: The private key does not belong to the certificate" in line.message
    assert "Pass the key that was used to request this certificate." in line.fix
    assert checks["signature"].status == SKIP


def test_a_chain_locate_cannot_build_is_the_chain_line_and_the_key_is_still_tested(
        emulator: Emulator, root_ca: CertificateAuthority, tmp_path: Path) -> None:
    issuer, intermediates = root_ca, []
    for level in range(6):  # one more than the service takes
        issuer = issuer.issue_intermediate(f"Level {level} CA")
        intermediates.append(issuer.certificate)
    key = new_private_key("p256")
    leaf = issuer.issue_leaf(key.public_key(), "deep")
    checks = doctor(emulator, str(write_pem(tmp_path / "c.pem", leaf)),
                    str(write_pem(tmp_path / "k.pem", key, mode=0o600)),
                    intermediates=str(write_pem(tmp_path / "chain.pem", *reversed(intermediates))))
    length = checks["chain-length"]
    assert length.status == FAIL and length.code == "RAH-CERT-001" and "6 intermediates" in length.message
    assert checks["chain-order"].status == SKIP and checks["chain-path"].status == SKIP
    assert checks["key"].status == PASS and checks["signature"].status == PASS


def test_findings_check_on_plain_data() -> None:
    one = Finding(CertificateError("First.", hint="Do this."))
    two = Finding(KeyLoadError("Second.", hint="Do that."))
    check = findings_check("key", [one, two])
    assert (check.status, check.code) == (FAIL, "RAH-CERT-001")
    assert check.message == "First. Also [RAH-KEY-001]: Second."
    assert check.fix == "Do this. Do that."
    assert findings_check("key", [one]).message == "First."
