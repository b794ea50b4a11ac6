"""RFC 7512 pkcs11: URIs: parsing, printing, round trip, and errors that never show a PIN."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rolesanywhere_hsm.errors import Pkcs11UriError
from rolesanywhere_hsm.signers.pkcs11_uri import OBJECT_TYPES, Pkcs11Uri, parse_pkcs11_uri


def test_parses_rfc7512_examples() -> None:
    uri = parse_pkcs11_uri(
        "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;"
        "model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;"
        "serial=?pin-source=file:/etc/token_pin"
    )
    assert uri.token == "The Software PKCS#11 Softtoken"
    assert uri.manufacturer == "Snake Oil, Inc."
    assert uri.model == "1.0"
    assert uri.object == "my-certificate"
    assert uri.type == "cert"
    assert uri.id == bytes.fromhex("69953e5cf4bdec91")
    assert uri.serial == ""
    assert uri.pin_source == "file:/etc/token_pin"


def test_parses_query_and_slot_and_library_attributes() -> None:
    uri = parse_pkcs11_uri(
        "pkcs11:slot-id=0;slot-description=Sun%20Metaslot;slot-manufacturer=Sun;"
        "library-manufacturer=Snake%20Oil;library-description=Soft;library-version=1.23"
        "?module-name=mypkcs11&module-path=/usr/lib/libmypkcs11.so&pin-value=1234"
    )
    assert uri.slot_id == 0  # 0 is a real slot, not "absent"
    assert uri.slot_description == "Sun Metaslot"
    assert uri.slot_manufacturer == "Sun"
    assert uri.library_manufacturer == "Snake Oil"
    assert uri.library_description == "Soft"
    assert uri.library_version == (1, 23)
    assert uri.module_name == "mypkcs11"
    assert uri.module_path == "/usr/lib/libmypkcs11.so"
    assert uri.pin_value == "1234"


def test_empty_uri_and_case_insensitive_scheme() -> None:
    assert parse_pkcs11_uri("pkcs11:") == Pkcs11Uri()
    assert parse_pkcs11_uri("PKCS11:object=a").object == "a"


def test_utf8_object_label_is_percent_decoded_and_printed_back() -> None:
    uri = parse_pkcs11_uri("pkcs11:object=cl%C3%A9%20%E2%9C%93")
    assert uri.object == "clé ✓"
    assert uri.to_string() == "pkcs11:object=cl%C3%A9%20%E2%9C%93"


def test_id_printed_fully_percent_encoded() -> None:
    assert Pkcs11Uri(id=b"\x01\xa2A").to_string() == "pkcs11:id=%01%a2%41"


def test_vendor_attributes_are_kept() -> None:
    uri = parse_pkcs11_uri("pkcs11:object=k;x-vendor=a%20b?x-q=1&x-q=2")
    assert uri.vendor_path == (("x-vendor", "a b"),)
    assert uri.vendor_query == (("x-q", "1"), ("x-q", "2"))
    assert parse_pkcs11_uri(uri.to_string()) == uri


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("file:/etc/pin", "not a pkcs11: URI"),
        ("pkcs11:tokn=a", "unknown path attribute 'tokn'"),
        ("pkcs11:pin-value=1", "query attribute"),
        ("pkcs11:object=a?token=b", "path attribute"),
        ("pkcs11:object=a;object=b", "object twice"),
        ("pkcs11:?module-name=a&module-name=b", "module-name twice"),
        ("pkcs11:slot-id=x1", "slot-id='x1' is not a decimal number"),
        ("pkcs11:slot-id=-1", "not a decimal number"),
        ("pkcs11:library-version=1.x", "library-version"),
        ("pkcs11:type=key", "type='key'"),
        ("pkcs11:object", "not name=value"),
        ("pkcs11:object=%zz", "bad percent-escape"),
        ("pkcs11:object=%C3", "not valid UTF-8"),
        ("pkcs11:object=a#frag", "fragment"),
    ],
)
def test_malformed_uris_are_refused_with_a_clear_message(text: str, expected: str) -> None:
    with pytest.raises(Pkcs11UriError) as info:
        parse_pkcs11_uri(text)
    assert expected in info.value.diagnostics()
    assert info.value.hint


def test_pin_value_and_pin_source_together_are_refused() -> None:
    with pytest.raises(Pkcs11UriError, match="both pin-value and pin-source"):
        parse_pkcs11_uri("pkcs11:object=a?pin-value=secret1&pin-source=/p")


@pytest.mark.parametrize(
    "text",
    [
        "pkcs11:object=a?pin-value=S3cr%zz",
        "pkcs11:object=a?pin-value=S3cr%C3",
        "pkcs11:object=a?pin-value=S3cret&pin-value=S3cret",
        "pkcs11:object=a?pin-valueS3cret",
        "pkcs11:object=a?pin-value=S3cret&pin-source=/x",
    ],
)
def test_errors_never_echo_the_pin(text: str) -> None:
    with pytest.raises(Pkcs11UriError) as info:
        parse_pkcs11_uri(text)
    assert "S3cr" not in info.value.diagnostics()
    assert "S3cr" not in str(info.value)


def test_pin_value_is_hidden_from_repr_and_str_but_kept_by_to_string() -> None:
    uri = parse_pkcs11_uri("pkcs11:token=t?pin-value=S3cret")
    assert "S3cret" not in repr(uri)
    assert "S3cret" not in str(uri)
    assert "S3cret" not in f"{uri!r} {uri}"
    assert "pin-value=<hidden>" in str(uri)
    assert parse_pkcs11_uri(uri.to_string()).pin_value == "S3cret"


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
_maybe_text = st.none() | _text


@st.composite
def uris(draw: st.DrawFn) -> Pkcs11Uri:
    pin_value = draw(_maybe_text)
    pin_source = None if pin_value is not None else draw(_maybe_text)
    vendor_name = st.from_regex(r"x-[a-z][a-z0-9-]{0,8}", fullmatch=True)
    return Pkcs11Uri(
        token=draw(_maybe_text), manufacturer=draw(_maybe_text), serial=draw(_maybe_text),
        model=draw(_maybe_text), library_manufacturer=draw(_maybe_text),
        library_description=draw(_maybe_text),
        library_version=draw(st.none() | st.tuples(st.integers(0, 255), st.integers(0, 255))),
        slot_description=draw(_maybe_text), slot_manufacturer=draw(_maybe_text),
        slot_id=draw(st.none() | st.integers(0, 2**64 - 1)), object=draw(_maybe_text),
        type=draw(st.none() | st.sampled_from(OBJECT_TYPES)), id=draw(st.none() | st.binary(max_size=20)),
        pin_source=pin_source, pin_value=pin_value, module_name=draw(_maybe_text),
        module_path=draw(_maybe_text),
        vendor_path=tuple(draw(st.lists(st.tuples(vendor_name, _text), max_size=2))),
        vendor_query=tuple(draw(st.lists(st.tuples(vendor_name, _text), max_size=2))),
    )


@given(uris())
def test_round_trip(uri: Pkcs11Uri) -> None:
    text = uri.to_string()
    assert parse_pkcs11_uri(text) == uri
    assert parse_pkcs11_uri(text).to_string() == text  # printing is canonical


@given(st.text(max_size=60))
def test_parser_only_raises_our_error(text: str) -> None:
    try:
        parse_pkcs11_uri("pkcs11:" + text)
    except Pkcs11UriError:
        pass
