"""Known answers for the pure SigV4-X.509 canonicalisation, taken from botocore, not from us.

botocore's SigV4Auth builds the canonical request and string to sign that every AWS SDK
agrees on; our functions must produce the same text for the same request, for any query,
header spacing and body that hypothesis can think of.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from rolesanywhere_hsm import sigv4x509

REGION = "us-east-1"
DATE = "20260116T000243Z"

_printable = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, blacklist_categories=("Cs",)),
    min_size=0,
    max_size=30,
)
_param_name = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="&=#%+"),
    min_size=1,
    max_size=12,
)
_header_value = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E) | st.just(" "), min_size=1, max_size=40
).filter(lambda v: v.strip())


def botocore_canonical(query: dict[str, str], headers: dict[str, str], body: bytes) -> tuple[str, str]:
    """The canonical request and string to sign as botocore computes them."""
    request = AWSRequest(
        method="POST", url="https://rolesanywhere.us-east-1.amazonaws.com/sessions", params=query,
        headers=headers, data=body,
    )
    request.context["timestamp"] = DATE
    auth = SigV4Auth(BotoCredentials("unused", "unused"), "rolesanywhere", REGION)
    canonical = auth.canonical_request(request)
    return canonical, auth.string_to_sign(request, canonical)


def base_headers(**extra: str) -> dict[str, str]:
    return {
        "host": "rolesanywhere.us-east-1.amazonaws.com",
        "content-type": "application/json",
        "x-amz-date": DATE,
        "x-amz-x509": "MIIBszCCAVmgAwIBAgIU",
        **extra,
    }


def test_create_session_request_matches_botocore() -> None:
    query = {
        "profileArn": "arn:aws:rolesanywhere:us-east-1:111122223333:profile/0c3a9e57-5b3f-4d8a-9f0e-3f3f6a1b2c3d",
        "roleArn": "arn:aws:iam::111122223333:role/path/Role",
        "trustAnchorArn": "arn:aws:rolesanywhere:us-east-1:111122223333:trust-anchor/9a8b7c6d-1111-2222-3333-444455556666",
    }
    headers = base_headers(**{"x-amz-x509-chain": "AAAA,BBBB"})
    body = b'{"durationSeconds":3600}'
    expected_cr, expected_sts = botocore_canonical(query, headers, body)
    ours = sigv4x509.canonical_request("POST", "/sessions", query, headers, body)
    assert ours == expected_cr
    assert sigv4x509.string_to_sign("AWS4-HMAC-SHA256", DATE, REGION, ours) == expected_sts


@pytest.mark.slow  # hypothesis against botocore: several seconds
@settings(max_examples=200, deadline=None)
@given(
    query=st.dictionaries(_param_name, _printable, max_size=5),
    spaced=_header_value,
    body=st.binary(max_size=200),
)
def test_any_query_header_spacing_and_body_matches_botocore(
    query: dict[str, str], spaced: str, body: bytes
) -> None:
    headers = base_headers(**{"x-amz-x509-chain": spaced})
    expected_cr, _ = botocore_canonical(query, headers, body)
    assert sigv4x509.canonical_request("POST", "/sessions", query, headers, body) == expected_cr


def test_string_to_sign_uses_the_x509_algorithm_and_scope() -> None:
    canonical = sigv4x509.canonical_request("POST", "/sessions", {}, base_headers(), b"{}")
    lines = sigv4x509.string_to_sign("AWS4-X509-ECDSA-SHA256", DATE, "eu-west-2", canonical).split("\n")
    assert lines == [
        "AWS4-X509-ECDSA-SHA256",
        DATE,
        "20260116/eu-west-2/rolesanywhere/aws4_request",
        hashlib.sha256(canonical.encode()).hexdigest(),
    ]


def test_authorization_header_names_the_decimal_serial_and_sorted_headers() -> None:
    value = sigv4x509.authorization_header(
        "AWS4-X509-RSA-SHA256", 0x1F, DATE, REGION, ["X-Amz-X509", "host", "content-type", "x-amz-date"], b"\x01\xab"
    )
    assert value == (
        "AWS4-X509-RSA-SHA256 Credential=31/20260116/us-east-1/rolesanywhere/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date;x-amz-x509, Signature=01ab"
    )


def test_query_encoding_is_rfc3986_with_uppercase_hex_and_percent20() -> None:
    assert sigv4x509.canonical_query({"b": "a b:c/~", "a": "é"}) == "a=%C3%A9&b=a%20b%3Ac%2F~"


def test_repeated_header_is_refused() -> None:
    with pytest.raises(ValueError, match="given twice"):
        sigv4x509.canonical_headers({"Host": "a", "host": "b"})


def test_amz_date_needs_an_aware_time_and_converts_to_utc() -> None:
    cet = dt.timezone(dt.timedelta(hours=1))
    assert sigv4x509.amz_date(dt.datetime(2026, 1, 16, 1, 2, 43, tzinfo=cet)) == DATE
    with pytest.raises(ValueError):
        sigv4x509.amz_date(dt.datetime(2026, 1, 16))


def test_chain_header_is_comma_joined_base64_without_spaces() -> None:
    assert sigv4x509.encode_chain([b"\x00\x01", b"\xff"]) == "AAE=,/w=="
