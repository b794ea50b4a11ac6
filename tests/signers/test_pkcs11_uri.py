"""RFC 7512 pkcs11: URIs: parsing, printing, round trip, and errors that never show a PIN."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rolesanywhere_hsm.errors import Pkcs11UriError
from rolesanywhere_hsm.signers.pkcs11_uri import (
    CK_ULONG_MAX,
    OBJECT_TYPES,
    Pkcs11Uri,
    module_name_matches,
    parse_pkcs11_uri,
)


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
    assert Pkcs11Uri(id=b"\x01\xa2A").to_string() == "pkcs11:id=%01%A2%41"


def test_vendor_attributes_are_kept() -> None:
    uri = parse_pkcs11_uri("pkcs11:object=k;x-vendor=a%20b?x-q=1&x-q=2")
    assert uri.vendor_path == (("x-vendor", "a b"),)
    assert uri.vendor_query == (("x-q", "1"), ("x-q", "2"))
    assert parse_pkcs11_uri(uri.to_string()) == uri


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("file:/etc/pin", "not a pkcs11: URI"),
        ("pkcs11:tokn=a", "unknown path attribute 'tokn'; did you mean token?"),
        ("pkcs11:pin-value=1", "query attribute"),
        ("pkcs11:object=a?token=b", "path attribute"),
        ("pkcs11:?modul-name=a", "did you mean module-name?"),
        ("pkcs11:ob%6Aect=a", "characters RFC 7512 does not allow"),
        ("pkcs11:object=a;object=b", "object twice"),
        ("pkcs11:?module-name=a&module-name=b", "module-name twice"),
        ("pkcs11:slot-id=x1", "slot-id='x1' is not a decimal number"),
        ("pkcs11:slot-id=-1", "not a decimal number"),
        ("pkcs11:slot-id=", "not a decimal number"),
        (f"pkcs11:slot-id={CK_ULONG_MAX + 1}", "out of range"),
        ("pkcs11:slot-id=" + "9" * 5000, "out of range"),
        ("pkcs11:library-version=256", "0..255"),
        ("pkcs11:library-version=1.256", "0..255"),
        ("pkcs11:library-version=1.", "library-version"),
        ("pkcs11:?module-path=libsofthsm2.so", "absolute"),
        ("pkcs11:?module-path=./lib/m.so", "absolute"),
        ("pkcs11:token=a&pin-value=1234", "holds the query attribute pin-value (after an '&'); query attributes come after a '?'"),
        ("pkcs11:object=k;token=a&Module-Path=/x.so", "holds the query attribute module-path"),
        ("pkcs11:token=a?module-name=x;y", "unencoded ';'"),
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
        "pkcs11:object=a?pin-value=S3cret;pin-source=file:/x",  # ';' must not cut the PIN
        "pkcs11:object=a?pin-value=S3c&ret",  # '&' in a PIN, unencoded
        "pkcs11:object=a?pin-value=S3c&ret=x",  # ... that looks like a vendor attribute
        "pkcs11:object=a?pin-value=S3c&pin-valu=e",
        "pkcs11:object=a?pin-value=S3c&r%zz",
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
    vendor_name = st.from_regex(r"x-[A-Za-z0-9_-]{1,8}|vendor-[a-z]{3}", fullmatch=True)
    return Pkcs11Uri(
        token=draw(_maybe_text), manufacturer=draw(_maybe_text), serial=draw(_maybe_text),
        model=draw(_maybe_text), library_manufacturer=draw(_maybe_text),
        library_description=draw(_maybe_text),
        library_version=draw(st.none() | st.tuples(st.integers(0, 255), st.integers(0, 255))),
        slot_description=draw(_maybe_text), slot_manufacturer=draw(_maybe_text),
        slot_id=draw(st.none() | st.integers(0, CK_ULONG_MAX)), object=draw(_maybe_text),
        type=draw(st.none() | st.sampled_from(OBJECT_TYPES)), id=draw(st.none() | st.binary(max_size=20)),
        pin_source=pin_source, pin_value=pin_value, module_name=draw(_maybe_text),
        module_path=draw(st.none() | _text.map(lambda t: "/" + t)),
        vendor_path=tuple(draw(st.lists(st.tuples(vendor_name, _text), max_size=2))),
        vendor_query=tuple(draw(st.lists(st.tuples(vendor_name, _text), max_size=2))),
    )


@pytest.mark.slow  # hypothesis: several seconds
@given(uris())
def test_round_trip(uri: Pkcs11Uri) -> None:
    text = uri.to_string()
    assert parse_pkcs11_uri(text) == uri
    assert parse_pkcs11_uri(text).to_string() == text  # printing is canonical
    assert re.search(r"%[0-9A-F]?[a-f]", text) is None  # uppercase hex only (RFC 3986 2.1)


@given(st.text(alphabet="pkcs11:=;?&%0123456789AaBbFfxX-/ ", max_size=40))
def test_parse_print_parse_is_stable(text: str) -> None:
    """Whatever parses prints to a text that parses to the same value."""
    try:
        uri = parse_pkcs11_uri("pkcs11:" + text)
    except Pkcs11UriError:
        return
    assert parse_pkcs11_uri(uri.to_string()) == uri


# RFC 7512 section 3, every example, in order, with what each must mean.
RFC7512_EXAMPLES = [
    ("pkcs11:", Pkcs11Uri()),
    ("pkcs11:object=my-pubkey;type=public", Pkcs11Uri(object="my-pubkey", type="public")),
    ("pkcs11:object=my-key;type=private?pin-source=file:/etc/token",
     Pkcs11Uri(object="my-key", type="private", pin_source="file:/etc/token")),
    ("pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;"
     "model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial="
     "?pin-source=file:/etc/token_pin",
     Pkcs11Uri(token="The Software PKCS#11 Softtoken", manufacturer="Snake Oil, Inc.", model="1.0",
               object="my-certificate", type="cert", id=bytes.fromhex("69953e5cf4bdec91"),
               serial="", pin_source="file:/etc/token_pin")),
    ("pkcs11:object=my-sign-key;type=private?module-name=mypkcs11",
     Pkcs11Uri(object="my-sign-key", type="private", module_name="mypkcs11")),
    ("pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1",
     Pkcs11Uri(object="my-sign-key", type="private", module_path="/mnt/libmypkcs11.so.1")),
    ("pkcs11:token=Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc."
     "?pin-value=the-pin",
     Pkcs11Uri(token="Software PKCS#11 softtoken", manufacturer="Snake Oil, Inc.",
               pin_value="the-pin")),
    ("pkcs11:slot-description=Sun%20Metaslot", Pkcs11Uri(slot_description="Sun Metaslot")),
    ("pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;library-description=Soft%20Token%20Library;"
     "library-version=1.23",
     Pkcs11Uri(library_manufacturer="Snake Oil, Inc.", library_description="Soft Token Library",
               library_version=(1, 23))),
    ("pkcs11:token=My%20token%25%20created%20by%20Joe;library-version=3;"
     "id=%01%02%03%Ba%dd%Ca%fe%04%05%06",
     Pkcs11Uri(token="My token% created by Joe", library_version=(3, 0),
               id=bytes.fromhex("010203badd cafe 040506".replace(" ", "")))),
    ("pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert",
     Pkcs11Uri(token="A name with a substring %;", object="my-certificate", type="cert")),
    ("pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;object=my-certificate;"
     "type=cert",
     Pkcs11Uri(token="Name with a small A with acute: \u00e1", object="my-certificate", type="cert")),
    ("pkcs11:token=my-token;object=my-certificate;type=cert;vendor-aaa=value-a"
     "?pin-source=file:/etc/token_pin&vendor-bbb=value-b",
     Pkcs11Uri(token="my-token", object="my-certificate", type="cert",
               pin_source="file:/etc/token_pin", vendor_path=(("vendor-aaa", "value-a"),),
               vendor_query=(("vendor-bbb", "value-b"),))),
]


@pytest.mark.parametrize(("text", "meaning"), RFC7512_EXAMPLES, ids=range(len(RFC7512_EXAMPLES)))
def test_every_rfc7512_example(text: str, meaning: Pkcs11Uri) -> None:
    uri = parse_pkcs11_uri(text)
    assert uri == meaning
    printed = uri.to_string()
    assert parse_pkcs11_uri(printed) == uri
    # Same text up to attribute order and the case of percent-escapes.
    assert len(printed) == len(text)
    assert sorted(printed.upper()) == sorted(text.upper())


def test_percent_escapes_are_printed_in_uppercase() -> None:
    assert parse_pkcs11_uri("pkcs11:id=%4c%ba;object=a%2fb").to_string() == "pkcs11:object=a%2Fb;id=%4C%BA"


def test_semicolon_and_ampersand_are_printed_encoded_where_they_would_change_meaning() -> None:
    uri = Pkcs11Uri(token="a&b;c", module_name="m;n&o", pin_value="1;2&3")
    text = uri.to_string()
    assert text == "pkcs11:token=a%26b%3Bc?module-name=m%3Bn%26o&pin-value=1%3B2%263"
    assert parse_pkcs11_uri(text) == uri


def test_pin_value_is_printed_last_so_that_it_parses_back_with_vendor_attributes() -> None:
    uri = Pkcs11Uri(object="k", pin_value="1234", vendor_query=(("x-a", "1"),))
    assert uri.to_string() == "pkcs11:object=k?x-a=1&pin-value=1234"
    assert parse_pkcs11_uri(uri.to_string()) == uri


@pytest.mark.parametrize(
    ("name", "file_name", "matches"),
    [
        ("mypkcs11", "libmypkcs11.so", True),
        ("MyPKCS11", "libmypkcs11.so", True),  # RFC 7512: case-insensitive
        ("softhsm2", "/usr/lib/softhsm/libsofthsm2.so", True),
        ("libsofthsm2.so", "libsofthsm2.so", True),
        ("opensc-pkcs11", "opensc-pkcs11.so", True),
        ("mypkcs11", "mypkcs11.dll", True),
        ("mypkcs11", "libmypkcs11.so.1", True),
        ("mypkcs1", "libmypkcs11.so", False),
        ("", "libmypkcs11.so", False),
    ],
)
def test_module_name_matching(name: str, file_name: str, matches: bool) -> None:
    assert module_name_matches(name, file_name) is matches


def test_vendor_names_that_collide_with_standard_ones_are_refused() -> None:
    with pytest.raises(Pkcs11UriError):
        Pkcs11Uri(vendor_path=(("token", "x"),))
    with pytest.raises(Pkcs11UriError):
        Pkcs11Uri(vendor_query=(("bad name", "x"),))


@given(st.text(max_size=60))
def test_parser_only_raises_our_error(text: str) -> None:
    try:
        parse_pkcs11_uri("pkcs11:" + text)
    except Pkcs11UriError:
        pass


def test_a_pin_typed_as_pin_source_is_hidden_from_str_and_repr() -> None:
    uri = parse_pkcs11_uri("pkcs11:token=t?pin-source=48151623")
    assert "48151623" not in str(uri) and "48151623" not in repr(uri)
    assert str(parse_pkcs11_uri("pkcs11:token=t?pin-source=file:/etc/pin")).endswith("pin-source=file:/etc/pin")


def test_an_unencoded_ampersand_is_accepted_in_the_path_but_ends_a_query_value() -> None:
    """RFC 7512: pk11-path-res-avail includes '&' (p11tool prints labels like R&D unencoded);
    in the query '&' is the delimiter."""
    uri = parse_pkcs11_uri("pkcs11:token=R&D;object=a&b;manufacturer=x&y&z?module-name=m&pin-source=/p")
    assert (uri.token, uri.object, uri.manufacturer) == ("R&D", "a&b", "x&y&z")
    assert (uri.module_name, uri.pin_source) == ("m", "/p")
    assert parse_pkcs11_uri(uri.to_string()) == uri
    assert uri.to_string().startswith("pkcs11:token=R%26D;")
    assert parse_pkcs11_uri("pkcs11:x-vendor=a&b").vendor_path == (("x-vendor", "a&b"),)
    with pytest.raises(Pkcs11UriError, match="not name=value"):  # '&' still ends a query value
        parse_pkcs11_uri("pkcs11:object=a?module-name=R&D")
