"""The emulator's canonicalisation against botocore's, and the oracle against itself: if either
drifted, the acceptance tests could pass for the wrong reason."""

from __future__ import annotations

import string
from typing import Any
from urllib.parse import quote

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from rolesanywhere_hsm.emulator import canonical
from rolesanywhere_hsm.emulator import Emulator
from tests.emulator.conftest import sign
from tests.oracle import OracleError, verify_signed_request

_printable = st.text(alphabet=string.ascii_letters + string.digits + " -_.~:/=&?+*%@!,;", max_size=20)
_header_value = st.text(alphabet=string.ascii_letters + string.digits + " -_.,;=/:", min_size=1, max_size=30).map(str.strip).filter(bool)


@settings(max_examples=60, deadline=None)
@given(
    params=st.lists(st.tuples(_printable.filter(bool), _printable), max_size=5),
    headers=st.dictionaries(
        st.sampled_from(["x-amz-date", "content-type", "x-a", "x-b-c", "x-amz-x509"]), _header_value,
        min_size=1,
    ),
    body=st.binary(max_size=64),
)
def test_emulator_canonical_request_equals_botocores(params: list[tuple[str, str]], headers: dict[str, str], body: bytes) -> None:
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)
    request = AWSRequest(method="POST", url="http://127.0.0.1:8080/sessions", data=body, params=params)
    for name, value in headers.items():
        request.headers[name] = value
    request.headers["host"] = "127.0.0.1:8080"
    auth = SigV4Auth(Credentials("a", "b"), "rolesanywhere", "us-east-1")
    expected = auth.canonical_request(request)

    signed = sorted(set(headers) | {"host"})
    received = [*headers.items(), ("Host", "127.0.0.1:8080")]
    ours = canonical.canonical_request("POST", "/sessions", query, received, signed, body)

    assert ours == expected


def test_oracle_verifies_what_it_signs(emulator: Emulator, p256_key: Any, leaf: Any, emulator_workload: Any) -> None:
    for arns_in in ("query", "body"):
        signed = sign(emulator, emulator_workload.key, emulator_workload.certificate,
                      chain=emulator_workload.chain, arns_in=arns_in)
        result = verify_signed_request("POST", signed.url, signed.headers, signed.body, emulator.region)
        assert result.serial == emulator_workload.certificate.serial_number
        assert "x-amz-x509-chain" in result.signed_headers
        assert result.canonical_request == signed.canonical_request


@pytest.mark.parametrize("tamper", ["body", "query", "header", "region"])
def test_oracle_catches_tampering(tamper: str, emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    signed = sign(emulator, p256_key, leaf)
    url, headers, body, region = signed.url, dict(signed.headers), signed.body, emulator.region
    if tamper == "body":
        body = b'{"durationSeconds":900}'
    elif tamper == "query":
        url += "&x=1"
    elif tamper == "header":
        headers["Content-Type"] = "text/plain"
    else:
        region = "eu-west-1"

    with pytest.raises(OracleError):
        verify_signed_request("POST", url, headers, body, region)


def test_emulator_accepts_what_the_oracle_verifies(emulator: Emulator, p256_key: Any, leaf: Any) -> None:
    from tests.emulator.conftest import send

    signed = sign(emulator, p256_key, leaf, extra_headers={"X-Extra": "a  b"})
    verify_signed_request("POST", signed.url, signed.headers, signed.body, emulator.region)

    assert send(signed).status_code == 201
