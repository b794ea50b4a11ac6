"""An independent oracle for CreateSession signatures, built on botocore's SigV4 code.

Neither the emulator's canonicalisation nor the client's (rolesanywhere_hsm.sigv4x509) is used
here: botocore's `SigV4Auth` builds the canonical request and the string to sign, and only the
first line of the string to sign (botocore writes its HMAC algorithm name there) is swapped for
the X.509 one. So the emulator's tests do not depend on our client, and the client's tests can
check their requests against a canonicalisation that millions of requests exercise every day.

    signed = sign_create_session(url, key, cert, region=..., trust_anchor_arn=..., ...)
    httpx.post(signed.url, content=signed.body, headers=signed.headers)

    verify_signed_request("POST", url, headers, body, region)  # raises OracleError if bad
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

__all__ = [
    "OracleError",
    "SignedRequest",
    "Verification",
    "algorithm_for_key",
    "amz_date",
    "sign_create_session",
    "verify_signed_request",
]

RSA_ALGORITHM = "AWS4-X509-RSA-SHA256"
ECDSA_ALGORITHM = "AWS4-X509-ECDSA-SHA256"
_SERVICE = "rolesanywhere"
_AUTHORIZATION = re.compile(
    r"(?P<alg>\S+) Credential=(?P<serial>\d+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)"
    r"/aws4_request, ?SignedHeaders=(?P<signed>[^,]+), ?Signature=(?P<sig>[0-9a-f]+)"
)


class OracleError(AssertionError):
    """The request is not a correctly signed CreateSession (an AssertionError for pytest)."""


def algorithm_for_key(key: Any) -> str:
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return RSA_ALGORITHM
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return ECDSA_ALGORITHM
    raise TypeError(f"no X.509 SigV4 algorithm for {type(key).__name__}")


def amz_date(when: dt.datetime | None = None) -> str:
    when = when or dt.datetime.now(dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


class _SelectedHeadersSigV4(SigV4Auth):
    """botocore's SigV4 restricted to a chosen set of headers (botocore signs all it is given)."""

    def __init__(self, region: str, only: Iterable[str] | None = None,
                 skip: Iterable[str] = ()) -> None:
        # Credentials are only used for HMAC signing, which we replace; any value will do.
        super().__init__(Credentials("unused", "unused"), _SERVICE, region)
        self._only = None if only is None else {h.lower() for h in only}
        self._skip = {h.lower() for h in skip}

    def headers_to_sign(self, request: AWSRequest) -> Any:
        headers = super().headers_to_sign(request)
        for name in list(headers.keys()):
            if name in self._skip or (self._only is not None and name not in self._only):
                del headers[name]
        return headers


def _string_to_sign(auth: SigV4Auth, request: AWSRequest, algorithm: str) -> tuple[str, str]:
    canonical = auth.canonical_request(request)
    botocore_sts = auth.string_to_sign(request, canonical)
    # botocore hard-codes AWS4-HMAC-SHA256 as the first line; the rest is what we want.
    _, rest = botocore_sts.split("\n", 1)
    return canonical, f"{algorithm}\n{rest}"


def _sign(key: Any, message: bytes) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    raise TypeError(f"cannot sign with {type(key).__name__}")


@dataclass(frozen=True)
class SignedRequest:
    method: str
    url: str  # with the query string when the ARNs travel there
    headers: dict[str, str]
    body: bytes
    canonical_request: str
    string_to_sign: str


def sign_create_session(
    endpoint: str,
    private_key: Any,
    certificate: x509.Certificate,
    *,
    region: str,
    trust_anchor_arn: str | None,
    profile_arn: str | None,
    role_arn: str | None,
    chain: Sequence[x509.Certificate] = (),
    arns_in: str = "query",
    body_fields: Mapping[str, Any] | None = None,
    when: dt.datetime | None = None,
    algorithm: str | None = None,
    credential_serial: int | None = None,
    scope_region: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
    unsigned_headers: Iterable[str] = (),
) -> SignedRequest:
    """A CreateSession request signed the way the official helper does, via botocore.

    `arns_in` is "query" or "body". The keyword arguments after it exist so tests can make
    each kind of bad request: `algorithm` (a name that does not fit the key),
    `credential_serial`, `scope_region`, `when` (a stale date), `unsigned_headers` (sent but
    left out of SignedHeaders), `extra_headers` (sent and signed).
    """
    if arns_in not in ("query", "body"):
        raise ValueError("arns_in is 'query' or 'body'")
    arns = {
        name: value
        for name, value in (("profileArn", profile_arn), ("roleArn", role_arn), ("trustAnchorArn", trust_anchor_arn))
        if value is not None  # None leaves the ARN out, to test a request that lacks it
    }
    body_data: dict[str, Any] = dict(arns) if arns_in == "body" else {}
    body_data.update(body_fields or {})
    body = json.dumps(body_data, separators=(",", ":")).encode() if body_data else b"{}"
    url = endpoint.rstrip("/") + "/sessions"
    params = arns if arns_in == "query" else None
    headers = {
        "Content-Type": "application/json",
        "X-Amz-Date": amz_date(when),
        "X-Amz-X509": _b64(certificate),
    }
    if chain:
        headers["X-Amz-X509-Chain"] = ",".join(_b64(c) for c in chain)
    headers.update(extra_headers or {})
    request = AWSRequest(method="POST", url=url, headers=headers, data=body, params=params)
    request.context["timestamp"] = headers["X-Amz-Date"]
    auth = _SelectedHeadersSigV4(scope_region or region, skip=unsigned_headers)
    algorithm = algorithm or algorithm_for_key(private_key)
    canonical, to_sign = _string_to_sign(auth, request, algorithm)
    signed = auth.headers_to_sign(request)
    serial = certificate.serial_number if credential_serial is None else credential_serial
    signature = _sign(private_key, to_sign.encode()).hex()
    # The Host botocore derives from the URL, even when the test leaves it unsigned.
    host = _SelectedHeadersSigV4(region).headers_to_sign(request)["host"]
    sent = {"Host": host, **headers}
    sent["Authorization"] = (
        f"{algorithm} Credential={serial}/{auth.credential_scope(request)}, "
        f"SignedHeaders={auth.signed_headers(signed)}, Signature={signature}"
    )
    if params:
        url += "?" + urlencode(params)
    return SignedRequest("POST", url, sent, body, canonical, to_sign)


@dataclass(frozen=True)
class Verification:
    algorithm: str
    serial: int
    region: str
    signed_headers: list[str]
    canonical_request: str
    string_to_sign: str
    leaf: x509.Certificate
    chain: list[x509.Certificate] = field(default_factory=list)


def _headers_list(headers: Any) -> list[tuple[str, str]]:
    if hasattr(headers, "multi_items"):  # httpx.Headers
        return list(headers.multi_items())
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def verify_signed_request(
    method: str, url: Any, headers: Any, body: bytes, region: str,
    *, now: dt.datetime | None = None, skew_seconds: int = 300,
) -> Verification:
    """Check a CreateSession request made by anybody against botocore's canonicalisation.

    `headers` is a mapping, an httpx.Headers or a list of pairs; `url` carries the query.
    Raises OracleError saying what is wrong; returns what was verified.
    """
    url = str(url)  # httpx.URL too
    pairs = _headers_list(headers)
    lower: dict[str, list[str]] = {}
    for name, value in pairs:
        lower.setdefault(name.lower(), []).append(value)

    def one(name: str) -> str:
        values = lower.get(name, [])
        if len(values) != 1:
            raise OracleError(f"header {name} sent {len(values)} times, want once")
        return values[0]

    m = _AUTHORIZATION.fullmatch(one("authorization"))
    if not m:
        raise OracleError(f"Authorization does not parse: {one('authorization')!r}")
    algorithm, signed = m["alg"], m["signed"].split(";")
    if m["service"] != _SERVICE or m["region"] != region:
        raise OracleError(f"scope is {m['region']}/{m['service']}, want {region}/{_SERVICE}")
    date = one("x-amz-date")
    if date[:8] != m["date"]:
        raise OracleError(f"scope date {m['date']} is not the X-Amz-Date date {date}")
    signed_at = dt.datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    if abs(((now or dt.datetime.now(dt.timezone.utc)) - signed_at).total_seconds()) > skew_seconds:
        raise OracleError(f"X-Amz-Date {date} is outside the {skew_seconds} s window")
    required = {"content-type", "host", "x-amz-date", "x-amz-x509"}
    if "x-amz-x509-chain" in lower:
        required.add("x-amz-x509-chain")
    if not required <= set(signed):
        raise OracleError(f"SignedHeaders {signed} lacks {sorted(required - set(signed))}")
    leaf = x509.load_der_x509_certificate(base64.b64decode(one("x-amz-x509"), validate=True))
    chain = [
        x509.load_der_x509_certificate(base64.b64decode(p, validate=True))
        for p in (one("x-amz-x509-chain").split(",") if "x-amz-x509-chain" in lower else [])
    ]
    if len(chain) > 5:
        raise OracleError(f"chain of {len(chain)} certificates (at most 5)")
    if int(m["serial"]) != leaf.serial_number:
        raise OracleError(f"Credential serial {m['serial']} is not the leaf's {leaf.serial_number}")
    expected_algorithm = algorithm_for_key(leaf.public_key())
    if algorithm != expected_algorithm:
        raise OracleError(f"algorithm {algorithm}, the key wants {expected_algorithm}")

    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    bare_url = parts._replace(query="").geturl()
    request = AWSRequest(method=method, url=bare_url, data=body, params=params or None)
    for name, value in pairs:
        if name.lower() in signed:
            request.headers[name] = value  # HTTPHeaders appends, so repeats are kept
    request.context["timestamp"] = date
    auth = _SelectedHeadersSigV4(region, only=signed)
    headers_to_sign = auth.headers_to_sign(request)
    if auth.signed_headers(headers_to_sign) != m["signed"]:
        raise OracleError(f"signed headers {m['signed']} were not all sent")
    canonical, to_sign = _string_to_sign(auth, request, algorithm)
    key = leaf.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(bytes.fromhex(m["sig"]), to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
        else:
            assert isinstance(key, ec.EllipticCurvePublicKey)
            key.verify(bytes.fromhex(m["sig"]), to_sign.encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise OracleError(
            "signature does not verify over botocore's canonical request:\n" + canonical
        ) from None
    return Verification(algorithm, leaf.serial_number, region, signed, canonical, to_sign, leaf, chain)
