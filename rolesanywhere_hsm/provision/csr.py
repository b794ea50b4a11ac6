"""`csr`: a PKCS#10 certificate request (RFC 2986) signed by a key in a token or a file.

The request is assembled with asn1crypto: the CertificationRequestInfo DER (subject, public
key, and a subjectAltName extension request) is what the key signs, so the token signs it
exactly like it signs a CreateSession request (SHA-256, PKCS#1 v1.5 or ECDSA; the same
mechanism choice as the signer). File keys sign through `cryptography`, including ML-DSA
(which a CA may accept even though Roles Anywhere does not).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rolesanywhere_hsm.errors import UsageError
from rolesanywhere_hsm.redact import redact
from rolesanywhere_hsm.signers.base import SecretCallback

__all__ = [
    "SAN_KINDS",
    "SubjectAltName",
    "certification_request",
    "certification_request_info",
    "make_csr",
    "parse_sans",
    "parse_subject",
    "to_pem",
]

# --san prefixes -> asn1crypto GeneralName choice (RFC 5280 section 4.2.1.6).
SAN_KINDS = {
    "dns": "dns_name",
    "uri": "uniform_resource_identifier",
    "email": "rfc822_name",
    "ip": "ip_address",
}

# RFC 5754 / RFC 8017 / NIST CSOR: the signatureAlgorithm of the request per key kind.
_SIGNATURE_ALGORITHMS = {
    "RSA": ("sha256_rsa", True),  # (asn1crypto name or dotted OID, NULL parameters)
    "EC": ("sha256_ecdsa", False),
    "EC-SHA384": ("sha384_ecdsa", False),
    "ML-DSA-44": ("2.16.840.1.101.3.4.3.17", False),
    "ML-DSA-65": ("2.16.840.1.101.3.4.3.18", False),
    "ML-DSA-87": ("2.16.840.1.101.3.4.3.19", False),
}


@dataclass(frozen=True)
class SubjectAltName:
    kind: str  # a SAN_KINDS key
    value: str


def parse_subject(text: str) -> bytes:
    """An RFC 4514 string ("CN=workload-1,O=Example") -> the DER of the X.501 Name.

    RFC 4514 lists the most specific attribute first; the DER keeps the usual order (C, O,
    ..., CN), as `openssl req -subj` and every CA expect."""
    from cryptography import x509

    try:
        name = x509.Name.from_rfc4514_string(text.strip())
    except ValueError as exc:
        raise UsageError(f"--subject {redact(text)!r} is not an RFC 4514 name ({exc}).",
                         hint="Write it like --subject 'CN=workload-1,O=Example Corp,C=DE'.") from None
    if not list(name):
        raise UsageError("--subject is empty.", hint="Give at least a CN, e.g. --subject CN=workload-1.")
    return name.public_bytes()


def parse_sans(values: Sequence[str]) -> list[SubjectAltName]:
    """`--san dns:a.example,uri:spiffe://x/y,email:me@example.com,ip:10.0.0.1` (repeatable)."""
    sans: list[SubjectAltName] = []
    for value in values:
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            kind, sep, rest = item.partition(":")
            kind = kind.strip().lower()
            if not sep or kind not in SAN_KINDS or not rest:
                raise UsageError(
                    f"--san {redact(item)!r} is not understood.",
                    hint="Write kind:value with kind dns, uri, email or ip, e.g. "
                    "--san dns:host.example.com,uri:spiffe://example/workload.",
                )
            if kind == "ip":
                if "%" in rest:  # ipaddress takes fe80::1%eth0; a certificate holds no zone
                    raise UsageError(f"--san ip:{redact(rest)} has a zone index (%...), which a "
                                     "certificate cannot hold.",
                                     hint="Give the address without %ZONE, e.g. ip:fe80::1.")
                try:
                    rest = str(ipaddress.ip_address(rest))
                except ValueError:
                    raise UsageError(f"--san ip:{redact(rest)} is not an IP address.",
                                     hint="Write e.g. ip:192.0.2.10 or ip:2001:db8::1.") from None
            san = SubjectAltName(kind, rest)
            _check_encodable(san)
            sans.append(san)
    return sans


def _check_encodable(san: SubjectAltName) -> None:
    """Refuse, as a usage error, a name the certificate's ASN.1 cannot hold (asn1crypto would
    raise deep inside the request's encoding): a DNS label over 63 characters, a non-ASCII
    mailbox (an rfc822Name is IA5String; only the domain may be internationalised)."""
    from asn1crypto import x509

    shown = f"--san {san.kind}:{redact(san.value)}"
    if san.kind == "dns" and any(len(label) > 63 for label in san.value.split(".")):
        raise UsageError(f"{shown} has a DNS label longer than 63 characters.",
                         hint="Each dot-separated part of a DNS name has at most 63 characters.")
    if san.kind == "dns" and len(san.value.rstrip(".")) > 253:
        raise UsageError(f"{shown} is longer than the 253 characters of a DNS name.",
                         hint="Check the name's spelling.")
    if san.kind == "email" and not san.value.partition("@")[0].isascii():
        raise UsageError(f"{shown} has non-ASCII characters before the @, which a certificate's "
                         "email name cannot hold.", hint="Use an ASCII mailbox name.")
    try:
        x509.GeneralName(name=SAN_KINDS[san.kind], value=san.value).dump()
    except (ValueError, TypeError, UnicodeError, OSError) as exc:
        reason = redact(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
        raise UsageError(f"{shown} cannot be written in a certificate ({reason}).",
                         hint="Check the name's spelling.") from None


def certification_request_info(public_key_info: bytes, subject: bytes,
                               sans: Sequence[SubjectAltName] = (),
                               extra_extensions: Sequence[tuple[str, bytes]] = ()) -> bytes:
    """The DER that the key signs (RFC 2986 section 4.1). `extra_extensions` are (dotted OID,
    value) pairs requested as non-critical extensions: `csr --attest` puts the key's
    attestation there (docs/attestation.md)."""
    from asn1crypto import csr, keys, x509

    attributes = []
    requested: list[dict[str, Any]] = []
    if sans:
        names = [x509.GeneralName(name=SAN_KINDS[s.kind], value=s.value) for s in sans]
        requested.append({
            "extn_id": "subject_alt_name", "critical": False,
            "extn_value": x509.GeneralNames(names),
        })
    requested += [{"extn_id": oid, "critical": False, "extn_value": value} for oid, value in extra_extensions]
    if requested:
        attributes.append({"type": "extension_request", "values": [x509.Extensions(requested)]})
    return csr.CertificationRequestInfo({
        "version": "v1",
        "subject": x509.Name.load(subject),
        "subject_pk_info": keys.PublicKeyInfo.load(public_key_info),
        "attributes": attributes,
    }).dump()


def certification_request(info: bytes, key_kind: str, signature: bytes) -> bytes:
    """The signed request (DER): info, signatureAlgorithm, signature."""
    from asn1crypto import algos, csr
    from asn1crypto.core import Null

    algorithm, null_parameters = _SIGNATURE_ALGORITHMS[key_kind]
    identifier: dict[str, Any] = {"algorithm": algorithm}
    if null_parameters:
        identifier["parameters"] = Null()
    return csr.CertificationRequest({
        "certification_request_info": csr.CertificationRequestInfo.load(info),
        "signature_algorithm": algos.SignedDigestAlgorithm(identifier),
        "signature": signature,
    }).dump()


def to_pem(der: bytes) -> str:
    from asn1crypto import pem

    return pem.armor("CERTIFICATE REQUEST", der).decode("ascii")


def _file_key_signer(path: str, pkcs8_password: str | None, prompt: SecretCallback | None,
                     digest: str) -> tuple[bytes, str, Callable[[bytes], bytes]]:
    """(SubjectPublicKeyInfo, key kind, sign) for a private key file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from rolesanywhere_hsm.keysource import KeySource
    from rolesanywhere_hsm.signers.base import SignerConfig
    from rolesanywhere_hsm.signers.file import load_key_only, signing_function

    # The file signer's loader: PEM/DER PKCS#8 (encrypted too: the password asked once,
    # "Password for PATH"), traditional PEM, PKCS#12.
    key = load_key_only(SignerConfig.from_source(KeySource.key_file(path), prompt,
                                                 pkcs8_password=pkcs8_password))
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    if digest == "sha384" and not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UsageError("--digest sha384 is for EC keys only.", hint="Leave --digest out.")
    sign = signing_function(key, digest.upper())  # the file signer's; KeyLoadError for other keys
    if isinstance(key, rsa.RSAPrivateKey):
        return spki, "RSA", sign
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return spki, "EC-SHA384" if digest == "sha384" else "EC", sign
    level = "".join(c for c in type(key).__name__ if c.isdigit())  # MLDSA65PrivateKey -> 65
    return spki, f"ML-DSA-{level}", sign


def make_csr(
    private_key: str, subject: str, sans: Sequence[str] = (), *, pkcs11_lib: str | None = None,
    pkcs8_password: str | None = None, environ: Mapping[str, str] | None = None,
    prompt: SecretCallback | None = None, callback: SecretCallback | None = None,
    digest: str = "sha256", extra_extensions: Sequence[tuple[str, bytes]] = (),
) -> bytes:
    """The DER of a request for `subject` (RFC 4514) and `sans`, signed by `private_key` (a
    `pkcs11:` URI of a token key or a key file) with SHA-256, or SHA-384 for EC keys when
    `digest` is "sha384"."""
    if digest not in ("sha256", "sha384"):
        raise UsageError(f"--digest {redact(digest)!r} is not offered.", hint="Use sha256 or sha384 (EC keys).")
    subject_der = parse_subject(subject)
    parsed_sans = parse_sans(sans)
    from rolesanywhere_hsm.signers.pkcs11_uri import is_pkcs11_uri

    from rolesanywhere_hsm.signers.tpmkey import is_tss2_key_file

    if not is_pkcs11_uri(private_key) and is_tss2_key_file(private_key):
        from rolesanywhere_hsm.provision.tpm_request import tpm_key_request_signer

        with tpm_key_request_signer(private_key, digest) as (spki, kind, sign):
            info = certification_request_info(spki, subject_der, parsed_sans, extra_extensions)
            return certification_request(info, kind, sign(info))
    if not is_pkcs11_uri(private_key):
        spki, kind, sign = _file_key_signer(private_key, pkcs8_password, prompt, digest)
        info = certification_request_info(spki, subject_der, parsed_sans, extra_extensions)
        return certification_request(info, kind, sign(info))

    from rolesanywhere_hsm.provision.token import open_token, parse_token_uri

    key_uri = parse_token_uri(private_key, "--private-key")
    with open_token(key_uri, pkcs11_lib=pkcs11_lib, environ=environ, prompt=prompt,
                    callback=callback) as opened:
        key = opened.find_private_key(key_uri)
        if digest == "sha384" and key.key_type != "EC":
            raise UsageError("--digest sha384 is for EC keys only.", hint="Leave --digest out.")
        info = certification_request_info(key.public_key_info, subject_der, parsed_sans, extra_extensions)
        signature = opened.sign(key, info, ecdsa_sha384=digest == "sha384")
    return certification_request(info, "EC-SHA384" if digest == "sha384" else key.key_type, signature)
