"""The emulator refuses what the service refuses (docs/protocol.md section 4), with the service's
status, X-Amzn-ErrorType and message; the X-Rah-Emulator-Detail header is checked too, so that
each test proves the intended check fired and not an earlier one."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from rolesanywhere_hsm._dev.devpki import CertificateAuthority
from rolesanywhere_hsm.emulator import Emulator
from tests.emulator.conftest import (
    assert_refused,
    create_session,
    resign_with_sha1,
    send,
    sign,
)

INVALID_SIGNATURE = (403, "AccessDeniedException", "Invalid signature")
UNTRUSTED = (403, "AccessDeniedException", "Untrusted signing certificate")


def detail(response: Any) -> str:
    return response.headers.get("x-rah-emulator-detail", "")


# -- signature envelope ---------------------------------------------------------------------


def test_refuses_a_tampered_body(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    signed = sign(emulator, p256_key, leaf, body_fields={"durationSeconds": 900})

    response = send(signed, body=signed.body.replace(b"900", b"901"))

    assert_refused(response, *INVALID_SIGNATURE)
    assert "does not verify" in detail(response)


def test_refuses_a_tampered_query(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    signed = sign(emulator, p256_key, leaf)

    response = send(signed, url=signed.url + "&extra=1")

    assert_refused(response, *INVALID_SIGNATURE)
    assert "does not verify" in detail(response)


def test_refuses_a_serial_that_is_not_the_leafs(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    response = create_session(emulator, p256_key, leaf, credential_serial=leaf.serial_number + 1)

    assert_refused(response, *INVALID_SIGNATURE)
    assert "serial" in detail(response)


def test_refuses_a_scope_in_another_region(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    response = create_session(emulator, p256_key, leaf, scope_region="eu-west-1")

    assert_refused(response, *INVALID_SIGNATURE)
    assert "region 'eu-west-1'" in detail(response)


@pytest.mark.parametrize("minutes", [-6, 6])
def test_refuses_a_date_outside_the_skew_window(minutes: int, emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=minutes)

    response = create_session(emulator, p256_key, leaf, when=when)

    assert_refused(response, *INVALID_SIGNATURE)
    assert "from the server clock" in detail(response)


def test_skew_window_is_configurable(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    emulator.config.skew_seconds = 3600
    when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=30)

    assert create_session(emulator, p256_key, leaf, when=when).status_code == 201


def test_refuses_a_scope_date_that_is_not_the_amz_date(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    signed = sign(emulator, p256_key, leaf)
    headers = dict(signed.headers)
    yesterday = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)).strftime("%Y%m%d")
    headers["Authorization"] = headers["Authorization"].replace(
        f"/{headers['X-Amz-Date'][:8]}/", f"/{yesterday}/"
    )

    response = send(signed, headers=headers)

    assert_refused(response, *INVALID_SIGNATURE)
    assert "scope date" in detail(response)


@pytest.mark.parametrize("algorithm", ["AWS4-X509-RSA-SHA256", "AWS4-X509-ECDSA-SHA256"])
def test_refuses_an_algorithm_that_does_not_fit_the_key(
    algorithm: str, emulator: Emulator, key_of: Callable[[str], Any], root_ca: CertificateAuthority,
) -> None:
    key = key_of("p256") if algorithm.startswith("AWS4-X509-RSA") else key_of("rsa2048")
    cert = root_ca.issue_leaf(key.public_key(), "mismatch")

    response = create_session(emulator, key, cert, algorithm=algorithm)

    assert_refused(response, *INVALID_SIGNATURE)
    assert f"algorithm {algorithm} needs" in detail(response)


def test_refuses_an_unknown_algorithm(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    response = create_session(emulator, p256_key, leaf, algorithm="AWS4-HMAC-SHA256")

    assert_refused(response, *INVALID_SIGNATURE)
    assert "unknown algorithm" in detail(response)


def test_refuses_a_raw_r_s_ecdsa_signature(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    # What CKM_ECDSA returns: the client must convert it to DER before sending.
    signed = sign(emulator, p256_key, leaf)
    headers = dict(signed.headers)
    der_hex = headers["Authorization"].rsplit("Signature=", 1)[1]
    r, s = decode_dss_signature(bytes.fromhex(der_hex))
    raw = (r.to_bytes(32, "big") + s.to_bytes(32, "big")).hex()
    headers["Authorization"] = headers["Authorization"].replace(der_hex, raw)

    response = send(signed, headers=headers)

    assert_refused(response, *INVALID_SIGNATURE)
    assert "does not verify" in detail(response)


@pytest.mark.parametrize("header", ["content-type", "host", "x-amz-date", "x-amz-x509", "x-amz-x509-chain"])
def test_refuses_a_required_header_left_unsigned(
    header: str, emulator: Emulator, emulator_workload: Any,
) -> None:
    w = emulator_workload
    response = create_session(emulator, w.key, w.certificate, chain=w.chain, unsigned_headers=[header])

    assert_refused(response, *INVALID_SIGNATURE)
    assert f"headers not signed: {header}" in detail(response)


def test_refuses_a_missing_authorization(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    signed = sign(emulator, p256_key, leaf)
    headers = {k: v for k, v in signed.headers.items() if k != "Authorization"}

    assert_refused(send(signed, headers=headers), *INVALID_SIGNATURE)


def test_refuses_a_chain_of_more_than_five(emulator: Emulator, p256_key: Any, leaf: Any, intermediate_ca: CertificateAuthority) -> None:
    response = create_session(emulator, p256_key, leaf, chain=[intermediate_ca.certificate] * 6)

    assert_refused(response, *UNTRUSTED)
    assert "holds 6 certificates" in detail(response)


def test_refuses_a_leaf_header_that_is_not_a_certificate(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    signed = sign(emulator, p256_key, leaf)
    headers = {**signed.headers, "X-Amz-X509": base64.b64encode(b"not a certificate").decode()}

    response = send(signed, headers=headers)

    # The signature covers X-Amz-X509, but the certificate is parsed before it is checked.
    assert_refused(response, *UNTRUSTED)
    assert "not a base64 DER certificate" in detail(response)


# -- the certificate and its path -------------------------------------------------------------


def test_refuses_a_certificate_from_an_untrusted_ca(emulator: Emulator, p256_key: Any) -> None:
    other = CertificateAuthority.create("Some Other CA", "p256")
    cert = other.issue_leaf(p256_key.public_key(), "stranger")

    response = create_session(emulator, p256_key, cert)

    assert_refused(response, *UNTRUSTED)
    assert "no path" in detail(response)


def test_refuses_a_certificate_whose_intermediate_is_not_sent(
    emulator: Emulator, emulator_workload: Any,
) -> None:
    w = emulator_workload
    response = create_session(emulator, w.key, w.certificate, chain=[])

    assert_refused(response, *UNTRUSTED)
    assert "no path" in detail(response)


def test_refuses_an_expired_certificate(emulator: Emulator, p256_key: Any, root_ca: CertificateAuthority) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    cert = root_ca.issue_leaf(p256_key.public_key(), "expired",
                              not_before=now - dt.timedelta(days=10), not_after=now - dt.timedelta(days=1))

    response = create_session(emulator, p256_key, cert)

    assert_refused(response, *UNTRUSTED)
    assert "outside its validity" in detail(response)


def test_refuses_a_certificate_not_yet_valid(emulator: Emulator, p256_key: Any, root_ca: CertificateAuthority) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    cert = root_ca.issue_leaf(p256_key.public_key(), "future",
                              not_before=now + dt.timedelta(days=1), not_after=now + dt.timedelta(days=10))

    assert_refused(create_session(emulator, p256_key, cert), *UNTRUSTED)


def test_refuses_a_certificate_signed_with_sha1(emulator: Emulator, p256_key: Any, root_ca: CertificateAuthority) -> None:
    cert = resign_with_sha1(root_ca.issue_leaf(p256_key.public_key(), "sha1"), root_ca)
    assert cert.signature_hash_algorithm.name == "sha1"

    response = create_session(emulator, p256_key, cert)

    assert_refused(response, *UNTRUSTED)
    assert "weak hash" in detail(response)


def test_refuses_a_ca_certificate_as_leaf(emulator: Emulator, p256_key: Any, root_ca: CertificateAuthority) -> None:
    cert = root_ca.issue_leaf(p256_key.public_key(), "sneaky-ca", basic_constraints_ca=True,
                              key_usage=("digital_signature", "key_cert_sign"))

    response = create_session(emulator, p256_key, cert)

    assert_refused(response, *UNTRUSTED)
    assert "CA certificate" in detail(response)


def test_refuses_key_usage_without_digital_signature(emulator: Emulator, p256_key: Any, root_ca: CertificateAuthority) -> None:
    cert = root_ca.issue_leaf(p256_key.public_key(), "encipher-only", key_usage=("key_agreement",))

    response = create_session(emulator, p256_key, cert)

    assert_refused(response, *UNTRUSTED)
    assert "digitalSignature" in detail(response)


def test_accepts_a_leaf_without_key_usage_or_basic_constraints(
    emulator: Emulator, p256_key: Any, root_ca: CertificateAuthority,
) -> None:
    cert = root_ca.issue_leaf(p256_key.public_key(), "bare", key_usage=None, basic_constraints_ca=None)

    assert create_session(emulator, p256_key, cert).status_code == 201


def test_refuses_an_empty_subject(emulator: Emulator, p256_key: Any, root_ca: CertificateAuthority) -> None:
    cert = root_ca.issue_leaf(p256_key.public_key(), None, dns_names=["workload.example"])

    response = create_session(emulator, p256_key, cert)

    assert_refused(response, *UNTRUSTED)
    assert "empty subject" in detail(response)


def test_refuses_a_certificate_revoked_by_an_imported_crl(
    emulator_factory: Callable[..., Emulator], root_ca: CertificateAuthority, p256_key: Any,
) -> None:
    revoked = root_ca.issue_leaf(p256_key.public_key(), "revoked")
    kept = root_ca.issue_leaf(p256_key.public_key(), "kept")
    emulator = emulator_factory(crls=[root_ca.issue_crl([revoked.serial_number])])

    response = create_session(emulator, p256_key, revoked)

    assert_refused(response, *UNTRUSTED)
    assert "revoked" in detail(response)
    assert create_session(emulator, p256_key, kept).status_code == 201


def test_ignores_a_crl_not_signed_by_the_issuer(
    emulator_factory: Callable[..., Emulator], root_ca: CertificateAuthority, p256_key: Any,
) -> None:
    cert = root_ca.issue_leaf(p256_key.public_key(), "victim")
    # Same issuer name, other key: a forged CRL must not revoke anything.
    forger = CertificateAuthority(root_ca.certificate, CertificateAuthority.create("x", "p256").key)
    emulator = emulator_factory(crls=[forger.issue_crl([cert.serial_number])])

    assert create_session(emulator, p256_key, cert).status_code == 201


def test_refuses_an_intermediate_revoked_by_the_root(
    emulator_factory: Callable[..., Emulator], root_ca: CertificateAuthority, p256_key: Any,
) -> None:
    intermediate = root_ca.issue_intermediate("revoked intermediate", "p256")
    cert = intermediate.issue_leaf(p256_key.public_key(), "below-revoked")
    emulator = emulator_factory(crls=[root_ca.issue_crl([intermediate.certificate.serial_number])])

    response = create_session(emulator, p256_key, cert, chain=[intermediate.certificate])

    assert_refused(response, *UNTRUSTED)
    assert "revoked" in detail(response)


def test_refuses_a_chain_certificate_that_is_not_a_ca(
    emulator: Emulator, root_ca: CertificateAuthority, p256_key: Any, key_of: Callable[[str], Any],
) -> None:
    # A leaf that "issues" another leaf: signature fine, but basicConstraints says no.
    fake_key = key_of("p384")
    fake_issuer_cert = root_ca.issue_leaf(fake_key.public_key(), "not-a-ca")
    fake_issuer = CertificateAuthority(fake_issuer_cert, fake_key)
    cert = fake_issuer.issue_leaf(p256_key.public_key(), "below-a-leaf")

    response = create_session(emulator, p256_key, cert, chain=[fake_issuer_cert])

    assert_refused(response, *UNTRUSTED)
    assert "not a CA" in detail(response)


def test_p521_can_be_refused(emulator: Emulator, key_of: Callable[[str], Any], root_ca: CertificateAuthority) -> None:
    key = key_of("p521")
    cert = root_ca.issue_leaf(key.public_key(), "p521")
    emulator.config.allow_p521 = False

    response = create_session(emulator, key, cert)

    assert_refused(response, *UNTRUSTED)
    assert "P-521" in detail(response)


# -- resources and permissions ---------------------------------------------------------------


def _other_arn(arn: str) -> str:
    return arn.rsplit("/", 1)[0] + "/" + str(uuid.uuid4())


def test_refuses_an_unknown_trust_anchor(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    arn = _other_arn(emulator.trust_anchor_arn)

    response = create_session(emulator, p256_key, leaf, trust_anchor_arn=arn)

    assert_refused(response, 404, "ResourceNotFoundException", f"Trust anchor {arn} not found")


def test_refuses_an_unknown_profile(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    arn = _other_arn(emulator.profile_arn)

    response = create_session(emulator, p256_key, leaf, profile_arn=arn)

    assert_refused(response, 404, "ResourceNotFoundException", f"Profile {arn} not found")


def test_refuses_a_disabled_profile(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    emulator.config.profiles[emulator.profile_arn].enabled = False

    response = create_session(emulator, p256_key, leaf)

    assert_refused(response, 403, "AccessDeniedException", f"Unable to assume role for {emulator.role_arn}")
    assert "disabled" in detail(response)


def test_refuses_a_disabled_trust_anchor(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    emulator.config.trust_anchors[emulator.trust_anchor_arn].enabled = False

    response = create_session(emulator, p256_key, leaf)

    assert_refused(response, *UNTRUSTED)
    assert "disabled" in detail(response)


def test_refuses_a_role_outside_the_profile(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    role = "arn:aws:iam::111122223333:role/SomethingElse"

    response = create_session(emulator, p256_key, leaf, role_arn=role)

    assert_refused(response, 403, "AccessDeniedException", f"Unable to assume role for {role}")


def test_refuses_a_session_name_the_profile_does_not_accept(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    response = create_session(emulator, p256_key, leaf, body_fields={"roleSessionName": "my-session"})

    assert_refused(response, 403, "AccessDeniedException", "Not authorized to set roleSessionName.")


@pytest.mark.parametrize("name", ["x", "a" * 65, "has space", "semi;colon"])
def test_refuses_a_malformed_session_name(name: str, emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    emulator.config.profiles[emulator.profile_arn].accept_role_session_name = True

    response = create_session(emulator, p256_key, leaf, body_fields={"roleSessionName": name})

    assert response.status_code == 400
    assert response.headers["x-amzn-errortype"] == "ValidationException"
    assert "roleSessionName" in response.json()["message"]


@pytest.mark.parametrize(
    ("duration", "bound"),
    [(899, "greater than or equal to 900"), (43201, "less than or equal to 43200")],
)
def test_refuses_a_duration_out_of_range(duration: int, bound: str, emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    response = create_session(emulator, p256_key, leaf, body_fields={"durationSeconds": duration})

    assert_refused(
        response, 400, "ValidationException",
        f"1 validation error detected: Value '{duration}' at 'durationSeconds' failed to satisfy "
        f"constraint: Member must have value {bound}",
    )


def test_refuses_a_malformed_arn(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    response = create_session(emulator, p256_key, leaf, profile_arn="arn:aws:rolesanywhere:us-east-1:111122223333:profile/nope")

    assert response.status_code == 400
    assert response.headers["x-amzn-errortype"] == "ValidationException"
    assert "profileArn" in response.json()["message"]


@pytest.mark.parametrize("arns_in", ["query", "body"])
def test_refuses_a_missing_arn(arns_in: str, emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    response = create_session(emulator, p256_key, leaf, arns_in=arns_in, role_arn=None)

    assert_refused(
        response, 400, "ValidationException",
        "1 validation error detected: Value null at 'roleArn' failed to satisfy constraint: "
        "Member must not be null",
    )


def test_refuses_instance_properties_over_the_limits(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    properties = {f"k{i}": "v" for i in range(51)}

    response = create_session(emulator, p256_key, leaf, body_fields={"instanceProperties": properties})

    assert response.status_code == 400
    assert response.headers["x-amzn-errortype"] == "ValidationException"


def test_refuses_missing_instance_properties_when_the_profile_requires_them(
    emulator: Emulator, p256_key: Any, leaf: Any,
) -> None:
    emulator.config.profiles[emulator.profile_arn].require_instance_properties = True

    refused = create_session(emulator, p256_key, leaf)
    accepted = create_session(emulator, p256_key, leaf, body_fields={"instanceProperties": {"host": "a"}})

    assert refused.status_code == 403
    assert refused.headers["x-amzn-errortype"] == "AccessDeniedException"
    assert accepted.status_code == 201
    assert emulator.last_issued.instance_properties == {"host": "a"}


def test_refuses_arns_that_differ_between_query_and_body(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    response = create_session(
        emulator, p256_key, leaf, body_fields={"roleArn": "arn:aws:iam::111122223333:role/Other"}
    )

    assert response.status_code == 400
    assert "roleArn differs" in response.json()["message"]


def test_answers_other_paths_with_404(emulator: Emulator) -> None:
    import httpx

    response = httpx.post(emulator.url + "/other", content=b"{}")

    assert response.status_code == 404
    assert emulator.last_request.status == 404


def test_records_why_a_request_was_refused(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    create_session(emulator, p256_key, leaf, credential_serial=1)

    record = emulator.last_request
    assert (record.status, record.error_type, record.message) == INVALID_SIGNATURE
    assert "serial" in record.detail
    assert record.credentials is None
    assert emulator.issued == []


def test_leaf_der_round_trips_through_the_header(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    create_session(emulator, p256_key, leaf)

    sent = base64.b64decode(emulator.last_request.header("X-Amz-X509"))
    assert sent == leaf.public_bytes(Encoding.DER)


def test_refuses_a_profile_in_another_region(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    arn = emulator.profile_arn.replace(":us-east-1:", ":eu-west-1:")

    response = create_session(emulator, p256_key, leaf, profile_arn=arn)

    assert response.status_code == 400
    assert response.headers["x-amzn-errortype"] == "ValidationException"
    assert "region eu-west-1" in response.json()["message"]
