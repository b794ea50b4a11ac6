"""Certificate rotation without restart (issue 19 item 1), in-process: the rule on plain data,
the file stamps on real files (in place, by rename, by the Kubernetes `..data` swap), and a
`CredentialSession` (what serve, update and the boto3 provider run on) against the emulator, whose
record of each request names the certificate serial it was signed with."""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from rolesanywhere_hsm.attempts import Rotation
from rolesanywhere_hsm.botocore_provider import RolesAnywhereCredentialProvider
from rolesanywhere_hsm._dev.devpki import CertificateAuthority, new_private_key, write_pem
from rolesanywhere_hsm.emulator import Emulator
from rolesanywhere_hsm.rotation import file_stamp, pick_renewal
from rolesanywhere_hsm.session import CredentialSession, CredentialSpec
from rolesanywhere_hsm._dev.softhsm import SoftHsmToken
from tests.fixtures.softhsm import SOFTHSM_PIN

NOW = dt.datetime.now(dt.timezone.utc)


def der(cert: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.DER)


def leaf(ca: CertificateAuthority, key: Any, days: int, serial: int) -> Any:
    return ca.issue_leaf(key.public_key(), "workload-1", serial=serial,
                         not_after=NOW + dt.timedelta(days=days))


def write_to_token(token: SoftHsmToken, certificate: Any, label: str, key_id: bytes, tmp_path: Path) -> None:
    """Store a certificate on the token from another process, as an operator's tool would
    (pkcs11-tool), while our session stays open on it."""
    import shutil
    import subprocess

    if shutil.which("pkcs11-tool") is None:
        pytest.skip("OpenSC's pkcs11-tool is not installed")
    path = tmp_path / f"{label}.der"
    path.write_bytes(der(certificate))
    subprocess.run(["pkcs11-tool", "--module", token.module, "--token-label", token.label, "--login",
                    "--pin", SOFTHSM_PIN, "--write-object", str(path), "--type", "cert",
                    "--id", key_id.hex(), "--label", label],
                   env={**os.environ, **token.env}, check=True, capture_output=True, timeout=60)


# -- the rule, on plain data ---------------------------------------------------------------------

def test_pick_renewal_takes_the_latest_for_the_same_key_and_refuses_another_key(
    root_ca: CertificateAuthority,
) -> None:
    key, other = new_private_key("p256"), new_private_key("p256")
    current = der(leaf(root_ca, key, 30, 0x1001))
    renewed = der(leaf(root_ca, key, 90, 0x1002))
    newer = der(leaf(root_ca, key, 120, 0x1003))
    older = der(leaf(root_ca, key, 10, 0x1000))
    stranger = der(leaf(root_ca, other, 200, 0x2001))
    assert pick_renewal(current, [current]) == (None, None)
    assert pick_renewal(current, [current, renewed]) == (renewed, None)
    assert pick_renewal(current, [renewed, current, newer]) == (newer, None)
    assert pick_renewal(current, [current, older]) == (None, None)  # never backwards
    assert pick_renewal(current, [current, stranger]) == (None, None)  # beside it: not ours
    assert pick_renewal(current, [stranger]) == (None, stranger)  # took its place: refused


def test_pick_renewal_ignores_the_same_key_certified_by_another_issuer(root_ca: CertificateAuthority) -> None:
    """A YubiKey keeps its attestation certificate for the slot's key under the slot's CKA_ID
    (ykcs11): it certifies the same public key, lasts longer, and is issued by the card's f9
    key, not the leaf's CA. It is not a renewal (the kept chain would not reach it)."""
    key = new_private_key("p256")
    current = der(leaf(root_ca, key, 30, 0x1001))
    attestation_ca = CertificateAuthority.create("Yubico PIV Attestation", "p256", organization=None, days=3650)
    attestation = der(attestation_ca.issue_leaf(key.public_key(), "YubiKey PIV Attestation 9a", serial=0x3001,
                                                not_after=NOW + dt.timedelta(days=3000)))
    assert pick_renewal(current, [current, attestation]) == (None, None)
    renewed = der(leaf(root_ca, key, 90, 0x1002))
    assert pick_renewal(current, [attestation, current, renewed]) == (renewed, None)


def test_file_stamps_see_in_place_rename_and_kubernetes_swaps(tmp_path: Path) -> None:
    # The atomic writer's layout: tls.crt -> ..data/tls.crt, ..data -> ..2026_01_01_v1
    first = tmp_path / "..2026_01_01_v1"
    first.mkdir()
    (first / "tls.crt").write_text("one")
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "tls.crt").symlink_to("..data/tls.crt")
    path = str(tmp_path / "tls.crt")
    stamp = file_stamp([path])
    assert file_stamp([path]) == stamp
    second = tmp_path / "..2026_01_02_v2"
    second.mkdir()
    (second / "tls.crt").write_text("two")
    (tmp_path / "..data_tmp").symlink_to(second.name)
    os.rename(tmp_path / "..data_tmp", tmp_path / "..data")  # the swap
    swapped = file_stamp([path])
    assert swapped != stamp
    plain = tmp_path / "plain.crt"
    plain.write_text("one")
    before = file_stamp([str(plain)])
    (tmp_path / "new.crt").write_text("one")
    os.replace(tmp_path / "new.crt", plain)  # a rename over it, same size and content
    renamed = file_stamp([str(plain)])
    assert renamed != before
    with plain.open("r+") as handle:  # rewritten in place
        handle.write("two")
    os.utime(plain, ns=(0, 1))
    assert file_stamp([str(plain)]) != renamed


# -- a session against the emulator ---------------------------------------------------------------

def spec_for(server: Emulator, certificate: str, **extra: Any) -> CredentialSpec:
    return CredentialSpec(certificate=certificate, trust_anchor_arn=server.trust_anchor_arn,
                          profile_arn=server.profile_arn, role_arn=server.role_arn,
                          endpoint=server.url, **extra)


@pytest.mark.softhsm
def test_a_renewed_certificate_on_the_token_is_used_without_a_second_login(
    emulator: Emulator, softhsm_token: SoftHsmToken, intermediate_ca: CertificateAuthority, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    chain = write_pem(tmp_path / "chain.pem", intermediate_ca.certificate)
    key = softhsm_token.keys["ec-p256"]
    events: list[object] = []
    session = CredentialSession(spec_for(emulator, softhsm_token.uri_for("ec-p256", type="cert"),
                                         intermediates=str(chain)),
                                secret_callback=lambda _: SOFTHSM_PIN, rotate=True, observers=[events.append])
    with session, caplog.at_level(logging.INFO, "rolesanywhere_hsm.session"):
        session.fetch()
        old_serial = emulator.issued[-1].leaf_serial
        assert old_serial == key.certificate.serial_number
        renewed = intermediate_ca.issue_leaf(key.certificate.public_key(), "workload-1", serial=0x5EED01,
                                             not_after=NOW + dt.timedelta(days=500))
        write_to_token(softhsm_token, renewed, "ec-p256-renewed", key.key_id, tmp_path)  # same CKA_ID
        session.fetch()
        assert emulator.issued[-1].leaf_serial == 0x5EED01
        session.fetch()
        assert emulator.issued[-1].leaf_serial == 0x5EED01
        assert session.open_count == 1 and session.login_count == 1
        assert session._signer.login_count == 1  # type: ignore[union-attr]
    rotations = [e for e in events if isinstance(e, Rotation)]
    assert [(r.outcome, r.old.serial, r.new.serial if r.new else None) for r in rotations] == [
        ("applied", f"{old_serial:x}", "5eed01")]
    assert f"serial {old_serial:x}" in caplog.text and "serial 5eed01" in caplog.text


@pytest.mark.softhsm
def test_a_token_key_with_a_certificate_file_follows_the_kubernetes_swap_and_refuses_another_key(
    emulator: Emulator, softhsm_token: SoftHsmToken, intermediate_ca: CertificateAuthority, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = softhsm_token.keys["ec-p256"]
    volume = tmp_path / "volume"
    volume.mkdir()

    def publish(version: str, certificate: Any) -> None:
        directory = volume / f"..{version}"
        directory.mkdir()
        write_pem(directory / "tls.crt", certificate, intermediate_ca.certificate)
        (volume / "..data_tmp").symlink_to(directory.name)
        os.rename(volume / "..data_tmp", volume / "..data")

    publish("v1", key.certificate)
    (volume / "tls.crt").symlink_to("..data/tls.crt")
    spec = spec_for(emulator, str(volume / "tls.crt"), private_key=softhsm_token.uri_for("ec-p256"))
    events: list[object] = []
    with CredentialSession(spec, secret_callback=lambda _: SOFTHSM_PIN, rotate=True,
                           observers=[events.append]) as session, \
            caplog.at_level(logging.INFO, "rolesanywhere_hsm.session"):
        session.fetch()
        assert emulator.issued[-1].leaf_serial == key.certificate.serial_number
        publish("v2", leaf(intermediate_ca, _public(key), 400, 0x5EED02))
        session.fetch()
        assert emulator.issued[-1].leaf_serial == 0x5EED02
        stranger = leaf(intermediate_ca, new_private_key("p256"), 800, 0x5EED03)
        publish("v3", stranger)
        session.fetch()  # refused: the pair in use is kept while valid
        assert emulator.issued[-1].leaf_serial == 0x5EED02
        session.fetch()
        assert session.login_count == 1
    outcomes = [(e.outcome, e.new.serial if e.new else None) for e in events if isinstance(e, Rotation)]
    assert outcomes == [("applied", "5eed02"), ("refused", "5eed03")]
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.ERROR  # once, not at every refresh
    assert "another key" in refused[0].getMessage() and "keeping serial 5eed02" in refused[0].getMessage()


class _Public:
    def __init__(self, cert: Any) -> None:
        self._cert = cert

    def public_key(self) -> Any:
        return self._cert.public_key()


def _public(key: Any) -> _Public:
    return _Public(key.certificate)


def test_a_file_key_pair_renewed_by_rename_is_reopened(
    emulator: Emulator, root_ca: CertificateAuthority, tmp_path: Path,
) -> None:
    """A key in a file: the certificate and key renewed together (a new pair), written by
    rename; the signer is opened again from the files. A certificate alone for another key is
    refused and the pair in use kept."""
    cert_path, key_path = tmp_path / "leaf.crt", tmp_path / "leaf.key"
    first = new_private_key("p256")
    write_pem(cert_path, leaf(root_ca, first, 30, 0x7001))
    write_pem(key_path, first, mode=0o600)
    spec = spec_for(emulator, str(cert_path), private_key=str(key_path))
    with CredentialSession(spec, rotate=True) as session:
        session.fetch()
        assert emulator.issued[-1].leaf_serial == 0x7001
        second = new_private_key("p256")
        write_pem(tmp_path / "new.key", second, mode=0o600)
        write_pem(tmp_path / "new.crt", leaf(root_ca, second, 60, 0x7002))
        os.replace(tmp_path / "new.key", key_path)
        os.replace(tmp_path / "new.crt", cert_path)
        session.fetch()
        assert emulator.issued[-1].leaf_serial == 0x7002
        write_pem(tmp_path / "new.crt", leaf(root_ca, new_private_key("p256"), 90, 0x7003))
        os.replace(tmp_path / "new.crt", cert_path)
        session.fetch()
        assert emulator.issued[-1].leaf_serial == 0x7002


@pytest.mark.softhsm
def test_the_boto3_provider_uses_a_renewed_certificate_with_one_login(
    emulator: Emulator, softhsm_token: SoftHsmToken, intermediate_ca: CertificateAuthority, tmp_path: Path,
) -> None:
    pytest.importorskip("botocore")
    chain = write_pem(tmp_path / "chain.pem", intermediate_ca.certificate)
    key = softhsm_token.keys["ec-p256"]
    spec = spec_for(emulator, softhsm_token.uri_for("ec-p256", type="cert"), intermediates=str(chain))
    audit = tmp_path / "audit.jsonl"
    provider = RolesAnywhereCredentialProvider(spec, secret_callback=lambda _: SOFTHSM_PIN, audit_log=str(audit))
    try:
        first = provider.load().get_frozen_credentials()
        assert emulator.issued[-1].leaf_serial == key.certificate.serial_number
        renewed = intermediate_ca.issue_leaf(key.certificate.public_key(), "workload-1", serial=0x5EED04,
                                             not_after=NOW + dt.timedelta(days=500))
        write_to_token(softhsm_token, renewed, "ec-p256-renewed", key.key_id, tmp_path)
        provider._refresh()  # what botocore calls at the advisory time
        assert emulator.issued[-1].leaf_serial == 0x5EED04
        assert provider._session.login_count == 1 and provider._session.open_count == 1
        assert first.access_key != emulator.issued[-1].access_key_id
    finally:
        provider.close()
    import json

    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [line["certificateSerial"] for line in lines] == [f"{key.certificate.serial_number:x}", "5eed04"]
    assert [line["accessKeyId"] for line in lines] == [i.access_key_id for i in emulator.issued]
