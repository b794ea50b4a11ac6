"""keygen, csr and import-certificate on a blank SoftHSM token, ending in credentials from the
emulator; and what they refuse (another key's certificate, a taken label or id, an empty PIN),
with the token checked unchanged by counting its objects through python-pkcs11."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, new_private_key, write_pem
from rolesanywhere_hsm.emulator import Emulator
from rolesanywhere_hsm.errors import CertificateError, UsageError
from rolesanywhere_hsm.provision.csr import make_csr
from rolesanywhere_hsm.provision.keygen import generate_key
from rolesanywhere_hsm.provision.store import import_certificate
from rolesanywhere_hsm._dev.softhsm import SoftHsmToken
from tests.fixtures.softhsm import SOFTHSM_PIN
from tests.provision.flow import (cli, credential_process, der, key_attributes, object_count, onboard,
                                  try_to_widen_the_key)

TOKEN = "pkcs11:token=onboard"


@pytest.fixture
def blank(softhsm_factory: Callable[..., SoftHsmToken]) -> SoftHsmToken:
    return softhsm_factory("onboard", [])


@pytest.fixture
def env(blank: SoftHsmToken) -> dict[str, str]:
    return dict(os.environ, **blank.env, RAH_PKCS11_MODULE=blank.module, RAH_PKCS11_PIN=SOFTHSM_PIN)


@pytest.fixture
def inproc(blank: SoftHsmToken) -> dict[str, str]:
    """`environ` for the library functions run in this process."""
    return {"RAH_PKCS11_MODULE": blank.module, "RAH_PKCS11_PIN": SOFTHSM_PIN}


@pytest.fixture
def lib(blank: SoftHsmToken) -> Iterator[Callable[[], Any]]:
    """python-pkcs11 on the blank token, re-initialised at each call so that it sees what the
    CLI processes wrote."""
    import pkcs11

    def fresh() -> Any:
        library = pkcs11.lib(blank.module)
        library.reinitialize()
        return library

    yield fresh
    pkcs11.lib(blank.module).finalize()


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-2048"])
def test_blank_token_to_credentials(key_type: str, env: dict[str, str], root_ca: CertificateAuthority,
                                    emulator: Emulator, tmp_path: Path, lib: Callable[[], Any]) -> None:
    done = onboard(env, TOKEN, key_type, f"wl-{key_type}", root_ca, tmp_path)
    assert done.request.subject.rfc4514_string() == f"CN=wl-{key_type},O=Onboarding"
    attrs = key_attributes(lib(), "onboard", SOFTHSM_PIN, _id_of(done.key_uri))
    assert attrs["SENSITIVE"] is True and attrs["EXTRACTABLE"] is False
    assert attrs["NEVER_EXTRACTABLE"] is True and attrs["ALWAYS_SENSITIVE"] is True
    assert attrs["TOKEN"] is True and attrs["SIGN"] is True
    assert attrs["DECRYPT"] is False and attrs["UNWRAP"] is False
    assert attrs["public keys"] == 1
    assert attrs["certificates"] == [der(done.certificate)]
    assert attrs["certificate labels"] == [f"wl-{key_type}"]
    lib().finalize()  # let the CLI's SoftHSM be the only one with the token open

    creds = credential_process(env, emulator, done.certificate_uri)
    assert creds["AccessKeyId"] == emulator.last_issued.access_key_id
    assert emulator.last_issued.leaf_serial == done.certificate.serial_number


def _id_of(uri: str) -> bytes:
    from rolesanywhere_hsm.signers.pkcs11_uri import parse_pkcs11_uri

    ident = parse_pkcs11_uri(uri).id
    assert ident is not None and len(ident) == 8
    return ident


def test_certificate_of_another_key_is_refused_and_the_token_is_unchanged(
        env: dict[str, str], inproc: dict[str, str], root_ca: CertificateAuthority, tmp_path: Path,
        lib: Callable[[], Any]) -> None:
    ec_key = generate_key(TOKEN, "ec-p256", "mine", environ=inproc)
    rsa_key = generate_key(TOKEN, "rsa-2048", "rsa", environ=inproc)
    before = object_count(lib(), "onboard", SOFTHSM_PIN)
    lib().finalize()
    for uri, other in ((ec_key.uri, new_private_key("p256")), (rsa_key.uri, new_private_key("p256")),
                       (ec_key.uri, new_private_key("rsa2048"))):
        cert_path = write_pem(tmp_path / "other.crt", root_ca.issue_leaf(other.public_key(), "other"))
        result = cli(env, "import-certificate", "--private-key", uri, "--certificate", str(cert_path))
        assert result.returncode == 3 and result.stdout == ""
        assert "is not for the key" in result.stderr and "nothing was written" in result.stderr
        assert "Traceback" not in result.stderr
    assert object_count(lib(), "onboard", SOFTHSM_PIN) == before


def test_keygen_refuses_a_taken_label_or_id(env: dict[str, str], inproc: dict[str, str],
                                            lib: Callable[[], Any]) -> None:
    generate_key(TOKEN, "ec-p256", "taken", "0a", environ=inproc)
    before = object_count(lib(), "onboard", SOFTHSM_PIN)
    lib().finalize()
    result = cli(env, "keygen", "--token", TOKEN, "--label", "taken")
    assert result.returncode == 2 and "label 'taken'" in result.stderr and "never overwrites" in result.stderr
    result = cli(env, "keygen", "--token", TOKEN, "--label", "fresh", "--id", "0A")
    assert result.returncode == 2 and "id %0A" in result.stderr
    assert object_count(lib(), "onboard", SOFTHSM_PIN) == before


def test_keygen_with_an_id_prints_a_uri_that_selects_the_key(env: dict[str, str]) -> None:
    result = cli(env, "keygen", "--token", TOKEN, "--label", "by id", "--id", "a1b2", "--key-type", "ec-p384")
    assert result.returncode == 0, result.stderr
    uri = result.stdout.strip()
    assert "object=by%20id" in uri and "id=%A1%B2" in uri and "type=private" in uri
    assert uri.endswith("module-path=" + env["RAH_PKCS11_MODULE"])
    request = x509.load_pem_x509_csr(cli(env, "csr", "--private-key", uri, "--subject", "CN=p384").stdout.encode())
    assert request.is_signature_valid and request.public_key().curve.name == "secp384r1"


def test_an_empty_pin_is_never_sent(env: dict[str, str], lib: Callable[[], Any]) -> None:
    result = cli(dict(env, RAH_PKCS11_PIN=""), "keygen", "--token", TOKEN, "--label", "x")
    assert result.returncode == 5 and "empty" in result.stderr
    result = cli(dict(env, RAH_PKCS11_PIN="wrong-pin"), "keygen", "--token", TOKEN, "--label", "x")
    assert result.returncode == 5 and "tried once" in result.stderr and "wrong-pin" not in result.stderr
    assert object_count(lib(), "onboard", SOFTHSM_PIN) == 0


def test_keygen_token_uri_must_not_name_an_object(env: dict[str, str]) -> None:
    result = cli(env, "keygen", "--token", TOKEN + ";object=k", "--label", "k")
    assert result.returncode == 2 and "--label" in result.stderr


def test_import_twice_is_harmless_and_renewal_needs_replace(
        inproc: dict[str, str], root_ca: CertificateAuthority, tmp_path: Path,
        lib: Callable[[], Any]) -> None:
    key = generate_key(TOKEN, "ec-p256", "renew", environ=inproc)
    request = x509.load_der_x509_csr(make_csr(key.uri, "CN=renew", environ=inproc))
    first = write_pem(tmp_path / "first.crt", root_ca.issue_leaf(request.public_key(), "renew"))
    second_cert = root_ca.issue_leaf(request.public_key(), "renew")
    second = write_pem(tmp_path / "second.crt", second_cert)

    stored = import_certificate(key.uri, first, environ=inproc)
    again = import_certificate(key.uri, first, environ=inproc)
    assert again.uri == stored.uri and again.already_present and not stored.already_present
    with pytest.raises(UsageError, match="another certificate"):
        import_certificate(key.uri, second, environ=inproc)
    import_certificate(key.uri, second, replace=True, environ=inproc)
    assert key_attributes(lib(), "onboard", SOFTHSM_PIN, key.id)["certificates"] == [der(second_cert)]


def test_chain_certificates_are_stored_once(inproc: dict[str, str], root_ca: CertificateAuthority,
                                            intermediate_ca: CertificateAuthority, tmp_path: Path,
                                            lib: Callable[[], Any]) -> None:
    key = generate_key(TOKEN, "ec-p256", "chained", environ=inproc)
    request = x509.load_der_x509_csr(make_csr(key.uri, "CN=chained", environ=inproc))
    leaf = write_pem(tmp_path / "leaf.crt", intermediate_ca.issue_leaf(request.public_key(), "chained"))
    chain = write_pem(tmp_path / "chain.pem", intermediate_ca.certificate, root_ca.certificate)
    stored = import_certificate(key.uri, leaf, chain, environ=inproc)
    assert len(stored.chain_uris) == 2 and "type=cert" in stored.chain_uris[0]
    count = object_count(lib(), "onboard", SOFTHSM_PIN)
    assert count == 2 + 1 + 2  # key pair, leaf, two CA certificates
    import_certificate(key.uri, leaf, chain, environ=inproc)
    assert object_count(lib(), "onboard", SOFTHSM_PIN) == count


def test_a_leaf_as_chain_is_refused_before_anything_is_written(
        inproc: dict[str, str], root_ca: CertificateAuthority, tmp_path: Path, lib: Callable[[], Any]) -> None:
    key = generate_key(TOKEN, "ec-p256", "k", environ=inproc)
    request = x509.load_der_x509_csr(make_csr(key.uri, "CN=k", environ=inproc))
    leaf = root_ca.issue_leaf(request.public_key(), "k")
    both = write_pem(tmp_path / "both.pem", leaf, root_ca.issue_leaf(new_private_key("p256").public_key(), "x"))
    with pytest.raises(CertificateError, match="not a CA certificate; nothing was written"):
        import_certificate(key.uri, both, environ=inproc)
    assert object_count(lib(), "onboard", SOFTHSM_PIN) == 2


def test_a_signer_open_on_the_token_is_named_not_a_module_error(
        inproc: dict[str, str], root_ca: CertificateAuthority, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from rolesanywhere_hsm.errors import TokenError
    from rolesanywhere_hsm.signers.base import SignerConfig, load_signer

    key = generate_key(TOKEN, "ec-p256", "busy", environ=inproc)
    request = x509.load_der_x509_csr(make_csr(key.uri, "CN=busy", environ=inproc))
    import_certificate(key.uri, write_pem(tmp_path / "busy.crt", root_ca.issue_leaf(request.public_key(), "busy")),
                       environ=inproc)
    monkeypatch.setenv("RAH_PKCS11_PIN", SOFTHSM_PIN)
    with load_signer(SignerConfig(certificate=key.uri.replace("type=private", "type=cert"))):
        with pytest.raises(TokenError, match="already logged in"):
            generate_key(TOKEN, "ec-p256", "second", environ=inproc)


def test_token_ec_key_signs_a_sha384_request(inproc: dict[str, str]) -> None:
    key = generate_key(TOKEN, "ec-p384", "p384", environ=inproc)
    request = x509.load_der_x509_csr(make_csr(key.uri, "CN=p384", environ=inproc, digest="sha384"))
    assert request.is_signature_valid and request.signature_hash_algorithm.name == "sha384"
    rsa = generate_key(TOKEN, "rsa-2048", "rsa384", environ=inproc)
    with pytest.raises(UsageError, match="EC keys only"):
        make_csr(rsa.uri, "CN=x", environ=inproc, digest="sha384")



def _ca_certificate_for(ca: CertificateAuthority, public_key: Any) -> x509.Certificate:
    """A CA:TRUE certificate for `public_key`, issued by `ca` (what a user gets when they pass
    the CA's file, or a CA certificate made for the key, as --certificate)."""
    from cryptography.hazmat.primitives import hashes

    builder = ca._builder(x509.Name.from_rfc4514_string("CN=leafcheck CA"), public_key, None, None, None, 30)
    return builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(
        ca.key, hashes.SHA256())


def test_a_ca_or_expired_certificate_is_refused_as_the_leaf_and_the_token_is_unchanged(
        env: dict[str, str], inproc: dict[str, str], root_ca: CertificateAuthority, tmp_path: Path,
        lib: Callable[[], Any]) -> None:
    import datetime as dt

    key = generate_key(TOKEN, "ec-p256", "leafcheck", environ=inproc)
    public = x509.load_der_x509_csr(make_csr(key.uri, "CN=leafcheck", environ=inproc)).public_key()
    before = object_count(lib(), "onboard", SOFTHSM_PIN)
    lib().finalize()
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    expired = root_ca.issue_leaf(public, "leafcheck", not_before=now - dt.timedelta(days=30),
                                 not_after=now - dt.timedelta(days=1))
    for cert, words in ((expired, f"expired on {expired.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z"),
                        (_ca_certificate_for(root_ca, public), "is a CA certificate")):
        path = write_pem(tmp_path / "leaf.crt", cert)
        result = cli(env, "import-certificate", "--private-key", key.uri, "--certificate", str(path))
        assert result.returncode == 3 and result.stdout == "", result.stderr
        assert words in result.stderr and "nothing was written" in result.stderr.lower(), result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2
    assert object_count(lib(), "onboard", SOFTHSM_PIN) == before
    # a certificate that starts tomorrow (a renewal stored ahead of time) is accepted
    future = root_ca.issue_leaf(public, "leafcheck", not_before=now + dt.timedelta(days=1),
                                not_after=now + dt.timedelta(days=30))
    import_certificate(key.uri, write_pem(tmp_path / "future.crt", future), environ=inproc)
    assert object_count(lib(), "onboard", SOFTHSM_PIN) == before + 1


def test_a_token_certificate_outside_its_dates_is_refused_before_the_pin(
        env: dict[str, str], inproc: dict[str, str], root_ca: CertificateAuthority, tmp_path: Path,
        emulator: Emulator) -> None:
    import datetime as dt

    key = generate_key(TOKEN, "ec-p256", "later", environ=inproc)
    public = x509.load_der_x509_csr(make_csr(key.uri, "CN=later", environ=inproc)).public_key()
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    future = root_ca.issue_leaf(public, "later", not_before=now + dt.timedelta(days=1),
                                not_after=now + dt.timedelta(days=30))
    stored = import_certificate(key.uri, write_pem(tmp_path / "later.crt", future), environ=inproc)
    # a wrong PIN: were it tried, the exit would be 5 (and SoftHSM would count a failure)
    result = cli(dict(env, RAH_PKCS11_PIN="wrong-pin"), "credential-process", "--certificate", stored.uri,
                 "--trust-anchor-arn", emulator.trust_anchor_arn, "--profile-arn", emulator.profile_arn,
                 "--role-arn", emulator.role_arn, "--endpoint", emulator.url)
    assert result.returncode == 3, result.stderr
    assert f"not valid before {future.not_valid_before_utc:%Y-%m-%d %H:%M:%S}Z" in result.stderr
    assert emulator.requests == []


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-2048"])
def test_signing_only_cannot_be_undone_later(key_type: str, inproc: dict[str, str],
                                             lib: Callable[[], Any]) -> None:
    key = generate_key(TOKEN, key_type, "locked", environ=inproc)
    outcome = try_to_widen_the_key(lib(), "onboard", SOFTHSM_PIN, key.id)
    assert set(outcome) == {"DECRYPT", "SIGN", "UNWRAP", "DERIVE"}
    assert set(outcome.values()) <= {"ActionProhibited", "AttributeReadOnly", "unchanged"}, outcome
    attrs = key_attributes(lib(), "onboard", SOFTHSM_PIN, key.id)
    assert attrs["SIGN"] is True and attrs["DECRYPT"] is False and attrs["UNWRAP"] is False
