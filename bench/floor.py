"""The floor for a cold `credential-process`: the least a Python process must do for the same work.

Load the key (a file through `cryptography`, or a PKCS#11 module through python-pkcs11: load,
find the token, log in once, find the certificate and its key), build and sign one CreateSession
request, POST it with `http.client`, print the credential_process JSON. No option parsing beyond
argv, no validation, no retries, no error handling: what is left when every convenience is gone.
`python -m bench` times `credential-process` beside this script; the ratio is what our conveniences cost.

    python bench/floor.py ENDPOINT TRUST_ANCHOR PROFILE ROLE file CERT KEY
    python bench/floor.py ENDPOINT TRUST_ANCHOR PROFILE ROLE pkcs11 MODULE TOKEN_LABEL OBJECT_LABEL
        (PIN in RAH_PKCS11_PIN)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import os
import sys
from urllib.parse import urlsplit

from rolesanywhere_hsm import sigv4x509  # pure functions: the canonical request is not optional


def _file_signer(cert_path: str, key_path: str) -> tuple[bytes, int, str, object]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding

    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        def sign(message: bytes) -> bytes:
            return key.sign(message, ec.ECDSA(hashes.SHA256()))
        algorithm = "AWS4-X509-ECDSA-SHA256"
    else:
        def sign(message: bytes) -> bytes:
            return key.sign(message, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr]
        algorithm = "AWS4-X509-RSA-SHA256"
    return cert.public_bytes(serialization.Encoding.DER), cert.serial_number, algorithm, sign


def _pkcs11_signer(module: str, token_label: str, label: str) -> tuple[bytes, int, str, object]:
    import pkcs11
    from asn1crypto import x509 as asn1_x509
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
    from pkcs11.util.ec import encode_ecdsa_signature

    token = pkcs11.lib(module).get_token(token_label=token_label)
    session = token.open(user_pin=os.environ["RAH_PKCS11_PIN"])
    cert_obj = next(session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: label}))
    der = bytes(cert_obj[Attribute.VALUE])
    key = session.get_key(ObjectClass.PRIVATE_KEY, id=bytes(cert_obj[Attribute.ID]))
    serial = asn1_x509.Certificate.load(der).serial_number
    if key.key_type == KeyType.EC:
        def sign(message: bytes) -> bytes:
            raw = key.sign(hashlib.sha256(message).digest(), mechanism=Mechanism.ECDSA)
            return encode_ecdsa_signature(raw)
        algorithm = "AWS4-X509-ECDSA-SHA256"
    else:
        def sign(message: bytes) -> bytes:
            return key.sign(message, mechanism=Mechanism.SHA256_RSA_PKCS)
        algorithm = "AWS4-X509-RSA-SHA256"
    return der, serial, algorithm, sign


def signed_request(endpoint: str, trust_anchor: str, profile: str, role: str, der: bytes, serial: int,
                   algorithm: str, sign: object) -> tuple[str, bytes, dict[str, str]]:
    """(path with query, body, headers) of one signed CreateSession request."""
    region = trust_anchor.split(":")[3]
    url = urlsplit(endpoint)
    query = {"profileArn": profile, "roleArn": role, "trustAnchorArn": trust_anchor}
    body = b'{"durationSeconds":3600}'
    date = sigv4x509.amz_date(dt.datetime.now(dt.timezone.utc))
    headers = {"content-type": "application/json", "host": url.netloc, "x-amz-date": date,
               "x-amz-x509": sigv4x509.encode_certificate(der)}
    canonical = sigv4x509.canonical_request("POST", "/sessions", query, headers, body)
    to_sign = sigv4x509.string_to_sign(algorithm, date, region, canonical)
    signature = sign(to_sign.encode())  # type: ignore[operator]
    headers["Authorization"] = sigv4x509.authorization_header(algorithm, serial, date, region,
                                                              headers, signature)
    return "/sessions?" + sigv4x509.canonical_query(query), body, headers


def main(argv: list[str]) -> None:
    endpoint, trust_anchor, profile, role, kind, *rest = argv
    der, serial, algorithm, sign = (_file_signer if kind == "file" else _pkcs11_signer)(*rest)
    path, body, headers = signed_request(endpoint, trust_anchor, profile, role, der, serial, algorithm, sign)
    url = urlsplit(endpoint)
    connection = (http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection)(url.netloc)
    connection.request("POST", path, body, headers)
    answer = json.loads(connection.getresponse().read())
    creds = answer["credentialSet"][0]["credentials"]
    print(json.dumps({"Version": 1, "AccessKeyId": creds["accessKeyId"],
                      "SecretAccessKey": creds["secretAccessKey"], "SessionToken": creds["sessionToken"],
                      "Expiration": creds["expiration"]}))


if __name__ == "__main__":
    main(sys.argv[1:])
