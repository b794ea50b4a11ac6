"""`read-certificate-data` and `sign-string` as drop-ins for the official helper: byte for byte
what `aws_signing_helper` 1.8.0 printed for the same inputs (tests/golden/, recorded from the
official binary), and EC signatures verified over the documented fixed message."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tests.clirunner import run_cli, run_process

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "aws-signing-helper-1.8.0"
INPUTS, OUTPUTS = GOLDEN / "inputs", GOLDEN / "outputs"
DIGESTS = {"SHA256": hashes.SHA256, "SHA384": hashes.SHA384, "SHA512": hashes.SHA512}


def run(*args: str) -> bytes:
    """The CLI in-process (the matrix is large); one test below runs the real process."""
    result = run_cli(*args, text=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def documented_message(certificate: Path) -> bytes:
    """The fixed message, built here from its description (PROTOCOL notes / the official README),
    not with our implementation: text, "1", SHA-256("IAM RA" || public key bytes)."""
    public = x509.load_pem_x509_certificate(certificate.read_bytes()).public_key()
    if isinstance(public, rsa.RSAPublicKey):
        raw = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    else:
        numbers = public.public_numbers()
        size = (public.curve.key_size + 7) // 8
        raw = b"\x04" + numbers.x.to_bytes(size, "big") + numbers.y.to_bytes(size, "big")
    return b"AWS Roles Anywhere Credential Helper Signing Test" + b"1" + hashlib.sha256(b"IAM RA" + raw).digest()


@pytest.mark.parametrize("name", ["rsa2048", "rsa3072", "p256", "p384"])
def test_read_certificate_data_is_byte_for_byte_the_official_output(name: str) -> None:
    expected = (OUTPUTS / f"read-certificate-data.{name}.json").read_bytes()
    assert run("read-certificate-data", "--certificate", str(INPUTS / f"{name}.pem")) == expected


@pytest.mark.parametrize("fmt", ["json", "text", "bin"])
@pytest.mark.parametrize("digest", ["SHA256", "SHA384", "SHA512"])
@pytest.mark.parametrize("name", ["rsa2048", "rsa3072"])
def test_sign_string_rsa_is_byte_for_byte_the_official_output(name: str, digest: str, fmt: str) -> None:
    expected = (OUTPUTS / f"sign-string.{name}.{digest}.{fmt}").read_bytes()
    out = run("sign-string", "--certificate", str(INPUTS / f"{name}.pem"), "--private-key",
              str(INPUTS / f"{name}.key"), "--digest", digest, "--format", fmt)
    assert out == expected


def test_sign_string_golden_signature_verifies_over_the_documented_message() -> None:
    """Ties the golden files to the message description (so a wrong message cannot pass both)."""
    public = x509.load_pem_x509_certificate((INPUTS / "rsa2048.pem").read_bytes()).public_key()
    from cryptography.hazmat.primitives.asymmetric import padding

    signature = (OUTPUTS / "sign-string.rsa2048.SHA384.bin").read_bytes()
    public.verify(signature, documented_message(INPUTS / "rsa2048.pem"), padding.PKCS1v15(), hashes.SHA384())


@pytest.mark.parametrize("digest", ["SHA256", "SHA384", "SHA512"])
@pytest.mark.parametrize("name", ["p256", "p384"])
def test_sign_string_ec_verifies_over_the_documented_message_with_the_digest(name: str, digest: str) -> None:
    out = run("sign-string", "--certificate", str(INPUTS / f"{name}.pem"), "--private-key",
              str(INPUTS / f"{name}.key"), "--digest", digest, "--format", "bin")
    public = x509.load_pem_x509_certificate((INPUTS / f"{name}.pem").read_bytes()).public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(out, documented_message(INPUTS / f"{name}.pem"), ec.ECDSA(DIGESTS[digest]()))
    other = "SHA512" if digest != "SHA512" else "SHA256"
    with pytest.raises(Exception):  # the digest asked is the digest used
        public.verify(out, documented_message(INPUTS / f"{name}.pem"), ec.ECDSA(DIGESTS[other]()))


def test_sign_string_json_is_a_json_string_of_the_hex() -> None:
    out = run("sign-string", "--certificate", str(INPUTS / "p256.pem"), "--private-key", str(INPUTS / "p256.key"))
    value = json.loads(out)
    assert isinstance(value, str) and bytes.fromhex(value) and not out.endswith(b"\n")


def test_sign_string_with_the_key_alone_as_the_official_helper_allows() -> None:
    out = run("sign-string", "--private-key", str(INPUTS / "rsa2048.key"), "--digest", "SHA512", "--format", "text")
    assert out == (OUTPUTS / "sign-string.rsa2048.SHA512.text").read_bytes()


def test_the_real_command_prints_the_same_bytes(tmp_path: Path) -> None:
    for args, golden in (
        (["read-certificate-data", "--certificate", str(INPUTS / "rsa3072.pem")], "read-certificate-data.rsa3072.json"),
        (["sign-string", "--certificate", str(INPUTS / "rsa2048.pem"), "--private-key", str(INPUTS / "rsa2048.key"),
          "--format", "bin"], "sign-string.rsa2048.SHA256.bin"),
    ):
        result = run_process(*args, text=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout == (OUTPUTS / golden).read_bytes()
        assert result.stderr == b""


def test_a_bad_digest_is_a_usage_error() -> None:
    result = run_cli("sign-string", "--private-key", str(INPUTS / "p256.key"), "--digest", "MD5")
    assert result.returncode == 2 and "--digest" in result.stderr


def test_read_certificate_data_picks_with_cert_selector_in_a_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes((INPUTS / "root.pem").read_bytes() + (INPUTS / "p384.pem").read_bytes()
                       + (INPUTS / "rsa2048.pem").read_bytes())
    serial = x509.load_pem_x509_certificate((INPUTS / "p384.pem").read_bytes()).serial_number
    out = run("read-certificate-data", "--certificate", str(bundle), "--cert-selector",
              f"Key=x509Serial,Value={serial:X}")
    assert out == (OUTPUTS / "read-certificate-data.p384.json").read_bytes()
    subject = x509.load_pem_x509_certificate((INPUTS / "rsa2048.pem").read_bytes()).subject.rfc4514_string()
    out = run("read-certificate-data", "--certificate", str(bundle), "--cert-selector",
              f"Key=x509Subject,Value={subject.lower()}", "--system-store-name", "MY")
    assert out == (OUTPUTS / "read-certificate-data.rsa2048.json").read_bytes()


def test_cert_selector_that_matches_several_lists_them_and_exits_3(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes((INPUTS / "p256.pem").read_bytes() + (INPUTS / "p384.pem").read_bytes())
    result = run_cli("read-certificate-data", "--certificate", str(bundle),
                     "--cert-selector", "Key=x509Issuer,Value=CN=Golden Root CA,O=Golden Test")
    assert result.returncode == 3 and result.stdout == ""
    assert "matches 2 certificates" in result.stderr and "golden-p256" in result.stderr
    assert "golden-p384" in result.stderr and "Traceback" not in result.stderr


def test_cert_selector_with_a_key_file_and_no_certificate_is_a_usage_error() -> None:
    """Without --certificate the selector searches the tokens; a key file has none."""
    result = run_cli("sign-string", "--private-key", str(INPUTS / "p256.key"),
                     "--cert-selector", "Key=x509Serial,Value=01")
    assert result.returncode == 2 and result.stdout == ""
    assert "--private-key is a file" in result.stderr


def test_credential_process_picks_the_leaf_in_a_bundle_with_cert_selector(
    tmp_path: Path, root_ca: object, leaf_files: dict[str, object]
) -> None:
    import os

    from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig

    rsa_files, ec_files = leaf_files["rsa2048"], leaf_files["p256"]
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(ec_files.certificate.read_bytes() + rsa_files.certificate.read_bytes())  # type: ignore[attr-defined]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAH_"))}
    with Emulator(EmulatorConfig.for_certificates([root_ca.certificate])) as server:  # type: ignore[attr-defined]
        base = ["credential-process", "--certificate", str(bundle),
                "--private-key", str(rsa_files.key), "--trust-anchor-arn", server.trust_anchor_arn,  # type: ignore[attr-defined]
                "--profile-arn", server.profile_arn, "--role-arn", server.role_arn, "--endpoint", server.url]
        without = run_cli(*base, env=env)
        assert without.returncode == 3 and "does not belong" in without.stderr  # the first one is the EC leaf
        serial = f"{rsa_files.cert.serial_number:x}"  # type: ignore[attr-defined]
        picked = run_cli(*base, "--cert-selector", f"Key=x509Serial,Value={serial}", "--system-store-name", "MY",
                         env=env)
        assert picked.returncode == 0, picked.stderr
        assert json.loads(picked.stdout)["AccessKeyId"] == server.last_issued.access_key_id
        assert server.last_issued.leaf_serial == rsa_files.cert.serial_number  # type: ignore[attr-defined]


def test_cert_selector_with_a_key_alone_is_refused_not_ignored() -> None:
    result = run_cli("sign-string", "--private-key", str(INPUTS / "p256.key"),
                     "--cert-selector", "Key=x509Serial,Value=01")
    assert result.returncode == 2 and "without --certificate" in result.stderr


def test_cert_selector_that_does_not_match_a_pkcs12_leaf_is_an_error(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key, pkcs12

    key = load_pem_private_key((INPUTS / "p256.key").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((INPUTS / "p256.pem").read_bytes())
    bundle = tmp_path / "id.p12"
    bundle.write_bytes(pkcs12.serialize_key_and_certificates(b"id", key, cert, None,  # type: ignore[arg-type]
                                                             serialization.NoEncryption()))
    ok = run("sign-string", "--certificate", str(bundle), "--format", "bin",
             "--cert-selector", f"Key=x509Serial,Value={cert.serial_number:x}")
    cert.public_key().verify(ok, documented_message(INPUTS / "p256.pem"), ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg,arg-type]
    result = run_cli("sign-string", "--certificate", str(bundle), "--cert-selector", "Key=x509Serial,Value=01")
    assert result.returncode == 3 and "matches no certificate" in result.stderr


@pytest.mark.softhsm
@pytest.mark.parametrize("digest", ["SHA256", "SHA384", "SHA512"])
@pytest.mark.parametrize("label", ["rsa-2048", "ec-p384"])
def test_sign_string_digest_with_a_token_key(softhsm_token: object, softhsm_env: dict[str, str],
                                             tmp_path: Path, label: str, digest: str) -> None:
    """--digest with a pkcs11: key (RSA: CKM_SHA384/512_RSA_PKCS on SoftHSM; EC: the hash
    made on the host), verified over the documented message with that digest only."""
    import os

    from cryptography.hazmat.primitives.serialization import Encoding

    key = softhsm_token.keys[label]  # type: ignore[attr-defined]
    pem = tmp_path / "leaf.pem"
    pem.write_bytes(key.certificate.public_bytes(Encoding.PEM))
    uri = softhsm_token.uri_for(label, type="private")  # type: ignore[attr-defined]
    result = run_cli("sign-string", "--private-key", uri, "--digest", digest, "--format", "text",
                     env=dict(os.environ, **softhsm_env))
    assert result.returncode == 0, result.stderr
    signature = bytes.fromhex(result.stdout)
    message = documented_message(pem)
    public = key.certificate.public_key()
    from cryptography.hazmat.primitives.asymmetric import ec, padding

    def verify(algorithm: object) -> None:
        if label.startswith("rsa"):
            public.verify(signature, message, padding.PKCS1v15(), algorithm)
        else:
            public.verify(signature, message, ec.ECDSA(algorithm))

    for other in DIGESTS:
        if other == digest:
            verify(DIGESTS[other]())
        else:
            with pytest.raises(Exception):  # noqa: B017 (InvalidSignature)
                verify(DIGESTS[other]())
