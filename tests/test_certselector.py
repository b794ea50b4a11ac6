"""--cert-selector: the official syntax parsed, names and serials compared by meaning, exactly one
certificate picked (plain data, hypothesis, and real certificates from the test CA)."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from asn1crypto import x509 as ax
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from rolesanywhere_hsm.certselector import (
    MAX_SELECTOR_FILE,
    Candidate,
    CertSelector,
    _dn_of,
    candidate_from_der,
    matches,
    parse_cert_selector,
    parse_dn,
    select_certificate,
)
from rolesanywhere_hsm._dev.devpki import CertificateAuthority, new_private_key
from rolesanywhere_hsm.errors import CertificateError, UsageError

CN, O, OU, C = "2.5.4.3", "2.5.4.10", "2.5.4.11", "2.5.4.6"


def dn(*rdns: dict[str, str]) -> tuple[frozenset[tuple[str, str]], ...]:
    return tuple(frozenset(r.items()) for r in rdns)


# ---- the official syntax ------------------------------------------------------------------

def test_the_official_readme_example_string() -> None:
    selector = parse_cert_selector(
        "Key=x509Subject,Value=CN=Subject Key=x509Issuer,Value=CN=Issuer "
        "Key=x509Serial,Value=15D19632234BF759A32802C0DA88F9E8AFC8702D"
    )
    assert selector.subject == dn({CN: "subject"})
    assert selector.issuer == dn({CN: "issuer"})
    assert selector.serial == 0x15D19632234BF759A32802C0DA88F9E8AFC8702D


def test_a_value_runs_to_the_next_key_so_dns_need_no_quoting() -> None:
    selector = parse_cert_selector("Key=x509Subject,Value=CN=Workload 1,OU=Ops,O=Example  Key=x509Serial,Value=0a")
    assert selector.subject == dn({CN: "workload 1"}, {OU: "ops"}, {O: "example"})
    assert selector.serial == 10


def test_the_official_readme_example_json(tmp_path: Path) -> None:
    path = tmp_path / "selector.json"
    path.write_text(json.dumps([
        {"Key": "x509Subject", "Value": "CN=Subject"},
        {"Key": "x509Issuer", "Value": "CN=Issuer"},
        {"Key": "x509Serial", "Value": "15D19632234BF759A32802C0DA88F9E8AFC8702D"},
    ]))
    selector = parse_cert_selector(f"file://{path}")
    assert selector == parse_cert_selector(
        "Key=x509Subject,Value=CN=Subject Key=x509Issuer,Value=CN=Issuer "
        "Key=x509Serial,Value=15D19632234BF759A32802C0DA88F9E8AFC8702D"
    ).__class__(selector.subject, selector.issuer, selector.serial, f"file://{path}")


def test_json_field_names_in_any_case_as_go_reads_them() -> None:
    selector = parse_cert_selector("file://x", read_file=lambda p, n: b'[{"key": "x509Serial", "VALUE": "ff"}]')
    assert selector.serial == 255


def test_the_selector_file_is_read_bounded(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(b" " * (MAX_SELECTOR_FILE + 1))
    with pytest.raises(UsageError, match="larger than"):
        parse_cert_selector(f"file://{path}")
    with pytest.raises(UsageError, match="Cannot read"):
        parse_cert_selector(f"file://{tmp_path / 'missing.json'}")
    fifo = tmp_path / "selector.fifo"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="FIFO"):  # refused at once, not waited on
        parse_cert_selector(f"file://{fifo}")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no Key/Value pair"),
        ("Key=x509Color,Value=red", "unknown key"),
        ("Key=x509Serial,Value=01 Key=x509Serial,Value=02", "given twice"),
        ("Key=x509Serial,Value=zz", "not a hexadecimal"),
        ("x509Serial=01", "cannot read"),
        ("Key=x509Subject,Value=XYZ=1", "unknown attribute type"),
        ("Key=x509Subject,Value=CN", "no '='"),
        ("Key=x509Subject,Value=CN=a,", "ends in a separator"),
        ('Key=x509Subject,Value=CN="open', "not closed"),
    ],
)
def test_bad_selectors_are_usage_errors_that_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        parse_cert_selector(text)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("data", [b"not json", b'{"Key": "x509Serial"}', b'[{"Key": "x509Serial"}]', b"[]"])
def test_bad_selector_files(data: bytes) -> None:
    with pytest.raises(UsageError):
        parse_cert_selector("file://s.json", read_file=lambda p, n: data)


# ---- names compared as names -----------------------------------------------------------------

@pytest.mark.parametrize(
    "text",
    [
        "CN=Workload 1,OU=Ops,O=Example,C=US",
        "cn=workload 1, ou=OPS; o=example ,c=us",
        "CN=  Workload   1 ,OU=Ops,O=Example,C=US",
        "2.5.4.3=Workload 1,OID.2.5.4.11=Ops,O=Example,C=US",
        "CN=#0c0a576f726b6c6f61642031,OU=Ops,O=Example,C=US",
        'CN="Workload 1",OU=Ops,O=Example,C=US',
        "CN=Workload\\201,OU=Ops,O=Example,C=US",
        "commonName=Workload 1,organizationalUnitName=Ops,O=Example,countryName=US",
    ],
)
def test_spellings_of_one_name_parse_the_same(text: str) -> None:
    assert parse_dn(text) == dn({CN: "workload 1"}, {OU: "ops"}, {O: "example"}, {C: "us"})


def test_multi_valued_rdn_in_any_order_and_escapes() -> None:
    assert parse_dn("OU=b+CN=a\\,x,O=y") == parse_dn("CN=A\\,X+OU=B,O=Y") == dn({CN: "a,x", OU: "b"}, {O: "y"})
    assert parse_dn("CN=caf\\C3\\A9") == dn({CN: "café"})
    assert parse_dn("CN=a\\+b") == dn({CN: "a+b"})


def test_rdn_order_matters_but_the_openssl_reverse_is_accepted() -> None:
    cert = Candidate(dn({CN: "w"}, {O: "e"}), dn({CN: "ca"}), 1, 0, "", "")
    assert matches(CertSelector(subject=parse_dn("CN=w,O=e")), cert)
    assert matches(CertSelector(subject=parse_dn("O=e,CN=w")), cert)
    assert not matches(CertSelector(subject=parse_dn("CN=w")), cert)
    assert not matches(CertSelector(subject=parse_dn("CN=w,O=e,C=US")), cert)


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)
# PrintableString / IA5String attributes hold ASCII only (cryptography would encode anything).
_ASCII = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=12)
_ATTRIBUTE = st.one_of(
    st.tuples(st.sampled_from([NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME,
                               NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.LOCALITY_NAME]), _TEXT),
    st.tuples(st.sampled_from([NameOID.DOMAIN_COMPONENT, NameOID.SERIAL_NUMBER]), _ASCII),
)


@pytest.mark.slow  # hypothesis, 200 examples
@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_ATTRIBUTE, min_size=1, max_size=2, unique=True), min_size=1, max_size=4))
def test_any_name_printed_in_rfc4514_parses_to_the_name_in_the_certificate(rdns: list) -> None:
    """cryptography prints the name (escaping what must be escaped); parsing that text gives the
    name asn1crypto reads from the DER: the parser agrees with an independent encoder."""
    name = x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(o, v) for o, v in rdn]) for rdn in rdns])
    parsed_from_der, _ = _dn_of(ax.Name.load(name.public_bytes()))
    assert parse_dn(name.rfc4514_string()) == parsed_from_der


@pytest.mark.slow  # hypothesis, 200 examples
@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_ATTRIBUTE, min_size=1, max_size=2, unique=True), min_size=1, max_size=4))
def test_the_name_shown_in_messages_pastes_back_as_a_selector(rdns: list) -> None:
    name = x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(o, v) for o, v in rdn]) for rdn in rdns])
    parsed, shown = _dn_of(ax.Name.load(name.public_bytes()))
    assert parse_dn(shown) == parsed


def test_names_are_shown_in_rfc4514_form() -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example, Inc."),
                      x509.NameAttribute(NameOID.COMMON_NAME, "#web ")])
    assert _dn_of(ax.Name.load(name.public_bytes()))[1] == "CN=\\#web\\ ,O=Example\\, Inc.,C=US"


@given(st.integers(min_value=0, max_value=2**160), st.sampled_from(["{:x}", "{:X}", "0x{:x}", "000{:X}"]),
       st.booleans())
def test_serials_compare_as_numbers(serial: int, pattern: str, colons: bool) -> None:
    text = pattern.format(serial)
    if colons:
        body = text[2:] if text.startswith("0x") else text
        body = body if len(body) % 2 == 0 else "0" + body
        text = ":".join(body[i:i + 2] for i in range(0, len(body), 2))
    assert parse_cert_selector(f"Key=x509Serial,Value={text}").serial == serial


# ---- picking one ------------------------------------------------------------------------------

def _candidates() -> list[Candidate]:
    ca = dn({CN: "ca"})
    return [
        Candidate(dn({CN: "web"}), ca, 1, dt.datetime(2030, 1, 1), "CN=web", "CN=ca"),
        Candidate(dn({CN: "web"}), ca, 2, dt.datetime(2031, 1, 1), "CN=web", "CN=ca"),
        Candidate(dn({CN: "db"}), dn({CN: "other ca"}), 3, dt.datetime(2029, 1, 1), "CN=db", "CN=other ca"),
    ]


def test_exactly_one_match_is_picked() -> None:
    assert select_certificate(_candidates(), parse_cert_selector("Key=x509Serial,Value=2")) == 1
    assert select_certificate(_candidates(), parse_cert_selector("Key=x509Issuer,Value=CN=Other CA")) == 2
    both = parse_cert_selector("Key=x509Subject,Value=CN=WEB Key=x509Serial,Value=01")
    assert select_certificate(_candidates(), both) == 0


def test_several_matches_are_listed_or_the_latest_expiring_is_picked() -> None:
    selector = parse_cert_selector("Key=x509Subject,Value=CN=web")
    with pytest.raises(CertificateError, match="matches 2 certificates") as info:
        select_certificate(_candidates(), selector, labels=["a", "b", "c"])
    assert "a: subject CN=web" in str(info.value) and "serial 2" in str(info.value) and "c:" not in str(info.value)
    assert "--use-latest-expiring-certificate" in (info.value.hint or "")
    assert select_certificate(_candidates(), selector, use_latest_expiring=True) == 1


def test_no_match_lists_every_candidate() -> None:
    with pytest.raises(CertificateError, match="matches no certificate") as info:
        select_certificate(_candidates(), parse_cert_selector("Key=x509Serial,Value=99"))
    assert all(f"serial {n}" in str(info.value) for n in (1, 2, 3))
    assert info.value.exit_code == 3


def test_latest_expiring_ties_pick_the_first_so_the_choice_is_repeatable() -> None:
    same = [Candidate(dn({CN: "x"}), dn({CN: "ca"}), n, 5, "", "") for n in (7, 8)]
    assert select_certificate(same, parse_cert_selector("Key=x509Subject,Value=CN=x"), use_latest_expiring=True) == 0


def test_real_certificates_from_der(root_ca: CertificateAuthority, intermediate_ca: CertificateAuthority) -> None:
    key = new_private_key("p256")
    leaves = [
        root_ca.issue_leaf(key.public_key(), "svc", organization="Example", serial=0x1234),
        intermediate_ca.issue_leaf(key.public_key(), "svc", organization="Example", serial=0x1234,
                                   days=30),
        intermediate_ca.issue_leaf(key.public_key(), "svc", organization="Example", days=400),
    ]
    ders = [c.public_bytes(serialization.Encoding.DER) for c in leaves]
    candidates = [candidate_from_der(d) for d in ders]
    issuer = intermediate_ca.certificate.subject.rfc4514_string()
    assert select_certificate(candidates, parse_cert_selector(
        f"Key=x509Serial,Value=00:12:34 Key=x509Issuer,Value={issuer.upper()}")) == 1
    by_subject = parse_cert_selector("Key=x509Subject,Value=O=Example,CN=svc")
    with pytest.raises(CertificateError, match="matches 3"):
        select_certificate(candidates, by_subject)
    assert select_certificate(candidates, by_subject, use_latest_expiring=True) == 2
    assert candidates[0].not_after == leaves[0].not_valid_after_utc
