"""A throwaway certificate authority for the demo, the emulator's quick start and the tests.

It issues certificates for public keys it is given (so keys generated inside a token get a
certificate without ever leaving it) and can bend every rule that Roles Anywhere checks
(validity, hash, key usage, basic constraints, subject), because the tests need certificates
that the emulator must refuse. Not for production PKI.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

__all__ = ["KEY_KINDS", "CertificateAuthority", "new_private_key", "write_pem"]

KEY_KINDS = ("rsa2048", "rsa3072", "rsa4096", "p256", "p384", "p521")

_CURVES: dict[str, ec.EllipticCurve] = {
    "p256": ec.SECP256R1(),
    "p384": ec.SECP384R1(),
    "p521": ec.SECP521R1(),
}
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha1": hashes.SHA1(),
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}


def new_private_key(kind: str) -> Any:
    """A fresh private key of a kind in KEY_KINDS (e.g. "rsa2048", "p384")."""
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    try:
        return ec.generate_private_key(_CURVES[kind])
    except KeyError:
        raise ValueError(f"unknown key kind {kind!r}; use one of {', '.join(KEY_KINDS)}") from None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _name(common_name: str | None, organization: str | None = None) -> x509.Name:
    attrs = []
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    if common_name:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


_KEY_USAGE_FIELDS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def _key_usage(usages: Iterable[str]) -> x509.KeyUsage:
    wanted = set(usages)
    unknown = wanted - set(_KEY_USAGE_FIELDS)
    if unknown:
        raise ValueError(f"unknown key usage {sorted(unknown)}")
    return x509.KeyUsage(**{f: f in wanted for f in _KEY_USAGE_FIELDS})


def _signing_hash(key: Any, hash_name: str) -> hashes.HashAlgorithm | None:
    # Ed25519/Ed448 CAs sign without a separate hash; RSA and EC need one.
    return _HASHES[hash_name]


@dataclass
class CertificateAuthority:
    """A CA certificate with its private key (in memory: this is test PKI)."""

    certificate: x509.Certificate
    key: Any

    @classmethod
    def create(
        cls,
        name: str = "rolesanywhere-hsm Test Root CA",
        key_kind: str = "p256",
        *,
        organization: str | None = "rolesanywhere-hsm tests",
        days: int = 3650,
    ) -> CertificateAuthority:
        key = new_private_key(key_kind)
        subject = _name(name, organization)
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(("key_cert_sign", "crl_sign", "digital_signature")), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, _signing_hash(key, "sha256"))
        )
        return cls(cert, key)

    @property
    def name(self) -> x509.Name:
        return self.certificate.subject

    def _builder(self, subject: x509.Name, public_key: Any, serial: int | None,
                 not_before: dt.datetime | None, not_after: dt.datetime | None,
                 days: int) -> x509.CertificateBuilder:
        now = _now()
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(serial if serial is not None else x509.random_serial_number())
            .not_valid_before(not_before or now - dt.timedelta(hours=1))
            .not_valid_after(not_after or now + dt.timedelta(days=days))
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )

    def issue_intermediate(
        self, name: str = "rolesanywhere-hsm Test Intermediate CA", key_kind: str = "p256",
        *, days: int = 1825,
    ) -> CertificateAuthority:
        key = new_private_key(key_kind)
        cert = (
            self._builder(_name(name, "rolesanywhere-hsm tests"), key.public_key(), None, None, None, days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(("key_cert_sign", "crl_sign", "digital_signature")), critical=True)
            .sign(self.key, _signing_hash(self.key, "sha256"))
        )
        return CertificateAuthority(cert, key)

    def issue_leaf(
        self,
        public_key: Any,
        common_name: str | None = "workload-1",
        *,
        organization: str | None = None,
        serial: int | None = None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        days: int = 365,
        hash_name: str = "sha256",
        key_usage: Sequence[str] | None = ("digital_signature",),
        basic_constraints_ca: bool | None = False,
        dns_names: Sequence[str] = (),
    ) -> x509.Certificate:
        """Issue an end-entity certificate for `public_key`.

        The keyword arguments exist so tests can make each kind of certificate that Roles
        Anywhere refuses: `key_usage=("key_encipherment",)`, `basic_constraints_ca=True`,
        `hash_name="sha1"`, a `not_after` in the past, `common_name=None` (empty subject).
        `None` for `key_usage` or `basic_constraints_ca` leaves the extension out.
        """
        builder = self._builder(
            _name(common_name, organization), public_key, serial, not_before, not_after, days
        )
        if basic_constraints_ca is not None:
            builder = builder.add_extension(
                x509.BasicConstraints(ca=basic_constraints_ca, path_length=None), critical=True
            )
        if key_usage is not None:
            builder = builder.add_extension(_key_usage(key_usage), critical=True)
        if dns_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False
            )
        return builder.sign(self.key, _signing_hash(self.key, hash_name))

    def issue_server(self, public_key: Any, hosts: Sequence[str] = ("localhost", "127.0.0.1"),
                     *, days: int = 30) -> x509.Certificate:
        """Issue a TLS server certificate for `hosts` (DNS names or IP addresses), for an HTTPS
        emulator in tests and benchmarks: leaves from `issue_leaf` are client certificates."""
        import ipaddress

        from cryptography.x509.oid import ExtendedKeyUsageOID

        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        return (
            self._builder(_name(hosts[0] if hosts else "localhost"), public_key, None, None, None, days)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, _signing_hash(self.key, "sha256"))
        )

    def issue_crl(self, revoked_serials: Iterable[int], *, days: int = 7) -> x509.CertificateRevocationList:
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=days))
        )
        for serial in revoked_serials:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(now - dt.timedelta(minutes=1))
                .build()
            )
        return builder.sign(self.key, hashes.SHA256())


def write_pem(path: str | Path, *items: Any, mode: int = 0o644) -> Path:
    """Write certificates, CRLs or private keys (unencrypted PKCS#8) as one PEM file."""
    chunks = []
    for item in items:
        if isinstance(item, (x509.Certificate, x509.CertificateRevocationList)):
            chunks.append(item.public_bytes(serialization.Encoding.PEM))
        else:
            chunks.append(
                item.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
    path = Path(path)
    path.write_bytes(b"".join(chunks))
    path.chmod(mode)
    return path
