"""locate: every problem it can see without a secret, as findings with their code and setting;
require() raises the first; unlock() is refused while there is one (no secret asked)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, new_private_key, write_pem
from rolesanywhere_hsm.errors import CertificateError
from rolesanywhere_hsm.signers.base import SignerConfig, locate


def test_a_key_file_reports_every_problem_it_sees_and_asks_for_no_password(
        root_ca: CertificateAuthority, tmp_path: Path) -> None:
    key = new_private_key("p256")
    now = dt.datetime.now(dt.timezone.utc)
    cert = root_ca.issue_leaf(key.public_key(), "old", not_before=now - dt.timedelta(days=60),
                              not_after=now - dt.timedelta(days=1))
    junk = tmp_path / "chain.pem"
    junk.write_text("not a certificate\n")
    asked: list[str] = []
    config = SignerConfig(certificate=str(write_pem(tmp_path / "c.pem", cert)),
                          private_key=str(write_pem(tmp_path / "k.pem", key, mode=0o600)),
                          intermediates=str(junk), secret_callback=lambda d: asked.append(d) or "x")
    located = locate(config)
    assert [f.setting for f in located.findings] == ["certificate", "intermediates"], located.findings
    assert all(f.code.startswith("RAH-") for f in located.findings)
    assert "expired" in located.findings[0].message.lower() or "valid" in located.findings[0].message
    with pytest.raises(CertificateError) as raised:
        located.unlock()
    assert raised.value is located.findings[0].error and asked == []


def test_a_clean_key_file_unlocks_to_a_signer(leaf_files: dict, tmp_path: Path) -> None:
    leaf = leaf_files["p256"]
    located = locate(SignerConfig(certificate=str(leaf.certificate), private_key=str(leaf.key)))
    assert located.ok and located.certificate is not None
    with located.require().unlock() as signer:
        assert signer.certificate == located.certificate
