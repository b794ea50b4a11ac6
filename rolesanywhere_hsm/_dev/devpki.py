"""A throwaway certificate authority for the demo, the emulator's quick start and the tests.

It issues certificates for public keys it is given (so keys generated inside a token get a
certificate without ever leaving it) and can bend every rule that Roles Anywhere checks
(validity, hash, key usage, basic constraints, subject), because the tests need certificates
that the emulator must refuse. Not for production PKI.

ML-DSA: cryptography 48 signs and verifies ML-DSA and reads ML-DSA certificates, but its
CertificateBuilder takes neither an ML-DSA subject key nor an ML-DSA CA key. So certificates
with ML-DSA on either side are built for stand-in EC keys, then their SubjectPublicKeyInfo (and,
for an ML-DSA CA, the signature algorithm) replaced and the TBS signed again (`_rebuild`). CRLs
of an ML-DSA CA are not offered (the CRL builder has the same limit).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, padding, rsa
from cryptography.x509.oid import NameOID

__all__ = [
    "KEY_KINDS",
    "MLDSA_KEY_KINDS",
    "CertificateAuthority",
    "load_test_ca",
    "new_private_key",
    "save_test_ca",
    "sign_request",
    "write_pem",
]

# `dev-ca`: the files of a test CA directory.
CA_CERTIFICATE_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"

# Kinds every key store takes (tokens too); ML-DSA kinds apart, since no token here has them.
KEY_KINDS = ("rsa2048", "rsa3072", "rsa4096", "p256", "p384", "p521")
MLDSA_KEY_KINDS = ("mldsa44", "mldsa65", "mldsa87")

_MLDSA: dict[str, Any] = {
    "mldsa44": mldsa.MLDSA44PrivateKey,
    "mldsa65": mldsa.MLDSA65PrivateKey,
    "mldsa87": mldsa.MLDSA87PrivateKey,
}
_MLDSA_PUBLIC = (mldsa.MLDSA44PublicKey, mldsa.MLDSA65PublicKey, mldsa.MLDSA87PublicKey)

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
    """A fresh private key of a kind in KEY_KINDS or MLDSA_KEY_KINDS (e.g. "rsa2048", "mldsa65")."""
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    if kind in _MLDSA:
        return _MLDSA[kind].generate()
    try:
        return ec.generate_private_key(_CURVES[kind])
    except KeyError:
        raise ValueError(
            f"unknown key kind {kind!r}; use one of {', '.join(KEY_KINDS + MLDSA_KEY_KINDS)}"
        ) from None


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


def _is_mldsa(public_key: Any) -> bool:
    return isinstance(public_key, _MLDSA_PUBLIC)


def _stand_in(public_key: Any) -> Any:
    """The key a CertificateBuilder is given when the real one is ML-DSA (replaced afterwards)."""
    return ec.generate_private_key(ec.SECP256R1()).public_key() if _is_mldsa(public_key) else public_key


# RFC 9881: id-ml-dsa-44/65/87, used both as key and signature algorithm (no parameters).
_MLDSA_SIGNATURE_OIDS = {
    mldsa.MLDSA44PrivateKey: "2.16.840.1.101.3.4.3.17",
    mldsa.MLDSA65PrivateKey: "2.16.840.1.101.3.4.3.18",
    mldsa.MLDSA87PrivateKey: "2.16.840.1.101.3.4.3.19",
}


def _mldsa_signature_oid(key: Any) -> str | None:
    return next((oid for cls, oid in _MLDSA_SIGNATURE_OIDS.items() if isinstance(key, cls)), None)


def _rebuild(cert: x509.Certificate, public_key: Any, ca_key: Any) -> x509.Certificate:
    """`cert` (built by cryptography for stand-in keys) with `public_key`'s SubjectPublicKeyInfo
    and signed again by `ca_key`: with the same algorithm for RSA and EC CA keys, with ML-DSA
    (signature algorithm OIDs replaced in the TBS and outside) for an ML-DSA CA key."""
    from asn1crypto import algos, core
    from asn1crypto import x509 as ax

    class AnyKeyTbs(ax.TbsCertificate):
        _fields = [(f[0], core.Any, *f[2:]) if f[0] == "subject_public_key_info" else f
                   for f in ax.TbsCertificate._fields]
        _field_map = None

    class AnyKeyCertificate(ax.Certificate):
        _fields = [(f[0], AnyKeyTbs, *f[2:]) if f[0] == "tbs_certificate" else f
                   for f in ax.Certificate._fields]
        _field_map = None

    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    signature_algorithm = AnyKeyCertificate.load(cert.public_bytes(serialization.Encoding.DER))["signature_algorithm"]
    tbs = AnyKeyTbs.load(cert.tbs_certificate_bytes)
    tbs["subject_public_key_info"] = core.Any.load(spki)
    mldsa_oid = _mldsa_signature_oid(ca_key)
    if mldsa_oid:
        signature_algorithm = algos.SignedDigestAlgorithm({"algorithm": mldsa_oid})
        tbs["signature"] = algos.SignedDigestAlgorithm({"algorithm": mldsa_oid})
    tbs_der = tbs.dump(force=True)
    if mldsa_oid:
        signature = ca_key.sign(tbs_der)  # pure ML-DSA, empty context
    elif isinstance(ca_key, rsa.RSAPrivateKey):
        signature = ca_key.sign(tbs_der, padding.PKCS1v15(), cert.signature_hash_algorithm)
    elif isinstance(ca_key, ec.EllipticCurvePrivateKey):
        signature = ca_key.sign(tbs_der, ec.ECDSA(cert.signature_hash_algorithm))
    else:
        raise ValueError(f"cannot sign a certificate with a {type(ca_key).__name__} CA key")
    rebuilt = AnyKeyCertificate({
        "tbs_certificate": AnyKeyTbs.load(tbs_der),
        "signature_algorithm": signature_algorithm,
        "signature_value": signature,
    })
    return x509.load_der_x509_certificate(rebuilt.dump())


def _finish(builder: x509.CertificateBuilder, public_key: Any, ca_key: Any, hash_name: str) -> x509.Certificate:
    """Sign `builder` (which holds `_stand_in(public_key)`) with `ca_key`; ML-DSA on either side
    goes through `_rebuild`, since cryptography's builder takes no ML-DSA key."""
    ca_is_mldsa = _mldsa_signature_oid(ca_key) is not None
    if not ca_is_mldsa and not _is_mldsa(public_key):
        return builder.sign(ca_key, _signing_hash(ca_key, hash_name))
    signer = ec.generate_private_key(ec.SECP256R1()) if ca_is_mldsa else ca_key
    return _rebuild(builder.sign(signer, _signing_hash(signer, hash_name)), public_key, ca_key)


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
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(_stand_in(key.public_key()))
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(("key_cert_sign", "crl_sign", "digital_signature")), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        return cls(_finish(builder, key.public_key(), key, "sha256"), key)

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
            .public_key(_stand_in(public_key))
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
        """An intermediate CA of any key kind (ML-DSA included)."""
        key = new_private_key(key_kind)
        builder = (
            self._builder(_name(name, "rolesanywhere-hsm tests"), key.public_key(), None, None, None, days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(("key_cert_sign", "crl_sign", "digital_signature")), critical=True)
        )
        return CertificateAuthority(_finish(builder, key.public_key(), self.key, "sha256"), key)

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
        return _finish(builder, public_key, self.key, hash_name)

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
        if _mldsa_signature_oid(self.key):
            raise ValueError("CRLs of an ML-DSA CA are not offered: cryptography's CRL builder cannot sign with ML-DSA")
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


def save_test_ca(ca: CertificateAuthority, directory: str | Path) -> tuple[Path, Path]:
    """`dev-ca init`: write `ca`'s certificate (0644) and unencrypted key (0600, created so:
    never readable by others, not even for a moment) into `directory` (made 0700 if new).
    An existing key is never overwritten: it may be the only copy of someone's test CA."""
    from rolesanywhere_hsm.errors import UsageError
    from rolesanywhere_hsm.files import write_atomic

    where = Path(directory)
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_path, cert_path = where / CA_KEY_FILE, where / CA_CERTIFICATE_FILE
    if key_path.exists() or cert_path.exists():
        raise UsageError(f"{where} already holds a test CA ({CA_KEY_FILE}/{CA_CERTIFICATE_FILE}); "
                         "nothing was written.",
                         hint="Choose another directory, or remove the old CA's files first.")
    key_pem = ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    write_atomic(key_path, key_pem, mode=0o600)
    write_atomic(cert_path, ca.certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return cert_path, key_path


def load_test_ca(directory: str | Path) -> CertificateAuthority:
    """The test CA that `save_test_ca` wrote into `directory`."""
    from rolesanywhere_hsm.errors import CertificateError, UsageError
    from rolesanywhere_hsm.files import read_regular_file

    where = Path(directory)
    key_path, cert_path = where / CA_KEY_FILE, where / CA_CERTIFICATE_FILE
    if not key_path.exists() or not cert_path.exists():
        raise UsageError(f"{where} holds no test CA (it needs {CA_CERTIFICATE_FILE} and {CA_KEY_FILE}).",
                         hint=f"Make one with: rolesanywhere-hsm dev-ca init {where}")
    try:
        certificate = x509.load_pem_x509_certificate(
            read_regular_file(cert_path, what="CA certificate", limit=1 << 20, error=CertificateError))
        key = serialization.load_pem_private_key(
            read_regular_file(key_path, what="CA key", limit=1 << 20, error=CertificateError), None)
    except ValueError as exc:
        raise CertificateError(f"The test CA in {where} cannot be read: {exc}",
                               hint=f"Make a new one with: rolesanywhere-hsm dev-ca init DIR") from None
    return CertificateAuthority(certificate, key)


def sign_request(ca: CertificateAuthority, request: bytes, *, days: int = 365,
                 subject: x509.Name | None = None) -> x509.Certificate:
    """`dev-ca sign`: the end-entity certificate Roles Anywhere wants for the PKCS#10 request
    `request` (PEM or DER): the request's subject and subject alternative names, `CA:FALSE`,
    `digitalSignature`, SHA-256, `days` long. The request's signature is checked first: a
    request that its key did not sign proves nothing about who holds the key.

    Takes the request itself (not a path) so that further rules on it (an attested request)
    can be added here, in one place; `subject` replaces the request's subject (the attesting
    CA writes its own OU)."""
    from rolesanywhere_hsm.errors import CertificateError, UsageError

    if not 1 <= days <= 3650:
        raise UsageError(f"--days {days} is out of range.", hint="Use 1..3650 days.")
    try:
        csr = (x509.load_pem_x509_csr(request) if request.lstrip().startswith(b"-----")
               else x509.load_der_x509_csr(request))
        valid = csr.is_signature_valid
        public_key = csr.public_key()
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"The certificate request cannot be read: {exc}",
                               hint="Give the PEM (or DER) request that `rolesanywhere-hsm csr` wrote.") from None
    if not valid:
        raise CertificateError("The certificate request's signature does not verify; nothing was signed.",
                               hint="Make the request again with `rolesanywhere-hsm csr`.")
    builder = ca._builder(subject or csr.subject, public_key, None, None, None, days)
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    builder = builder.add_extension(_key_usage(("digital_signature",)), critical=True)
    try:
        names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = None
    if names is not None:
        builder = builder.add_extension(names, critical=False)
    return _finish(builder, public_key, ca.key, "sha256")
