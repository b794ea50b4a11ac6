"""The issuer path from CA certificates found beside the leaf: by name, by key identifier,
with signatures verified; only intermediates, in order, at most 5."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from rolesanywhere_hsm._dev.devpki import CertificateAuthority
from rolesanywhere_hsm.errors import CertificateError
from rolesanywhere_hsm.issuer_path import build_issuer_path


def der(ca_or_cert) -> bytes:  # noqa: ANN001
    cert = getattr(ca_or_cert, "certificate", ca_or_cert)
    return cert.public_bytes(Encoding.DER)


@pytest.fixture(scope="module")
def pki() -> dict[str, object]:
    root = CertificateAuthority.create("Path Root", "p256")
    inter = root.issue_intermediate("Path Intermediate", "p256")
    sub = inter.issue_intermediate("Path Sub", "p256")
    unrelated = CertificateAuthority.create("Unrelated CA", "p256")
    # Same subject as the intermediate, another key: a name match alone would pick it.
    impostor = CertificateAuthority.create("Path Intermediate", "p256")
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return {"root": root, "inter": inter, "sub": sub, "unrelated": unrelated, "impostor": impostor,
            "leaf": sub.issue_leaf(key, "leaf-under-sub"), "leaf1": inter.issue_leaf(key, "leaf-under-inter")}


def test_only_the_intermediates_on_the_path_in_order(pki) -> None:  # noqa: ANN001
    on_token = [der(pki[n]) for n in ("unrelated", "root", "inter", "sub")] + [der(pki["leaf"])]
    path = build_issuer_path(der(pki["leaf"]), on_token)
    assert path.intermediates == (der(pki["sub"]), der(pki["inter"]))
    assert path.root == der(pki["root"])
    assert path.subjects[-1].endswith("(root, not sent)")


def test_no_issuer_on_the_token_gives_an_empty_chain(pki) -> None:  # noqa: ANN001
    path = build_issuer_path(der(pki["leaf1"]), [der(pki["unrelated"]), der(pki["sub"])])
    assert path.intermediates == () and path.root is None


def test_a_same_named_ca_with_another_key_is_never_chosen(pki) -> None:  # noqa: ANN001
    path = build_issuer_path(der(pki["leaf1"]), [der(pki["impostor"]), der(pki["inter"]), der(pki["root"])])
    assert path.intermediates == (der(pki["inter"]),)
    only_impostor = build_issuer_path(der(pki["leaf1"]), [der(pki["impostor"])])
    assert only_impostor.intermediates == ()


def test_leaf_certificates_are_not_issuers(pki) -> None:  # noqa: ANN001
    assert build_issuer_path(der(pki["leaf"]), [der(pki["leaf1"])]).intermediates == ()


def test_more_than_five_intermediates_is_refused() -> None:
    ca = CertificateAuthority.create("Deep Root", "p256")
    chain = []
    for depth in range(6):
        ca = ca.issue_intermediate(f"Deep {depth}", "p256")
        chain.append(der(ca))
    leaf = ca.issue_leaf(ec.generate_private_key(ec.SECP256R1()).public_key(), "deep-leaf")
    with pytest.raises(CertificateError, match="6 intermediates"):
        build_issuer_path(der(leaf), chain)
    assert len(build_issuer_path(der(leaf), chain, max_intermediates=6).intermediates) == 6
