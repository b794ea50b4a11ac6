"""The TOML table replacer on plain text: one table changes, every other byte stays, and what
cannot be edited safely is refused."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rolesanywhere_hsm.tomltable import TomlEditError, render_table, replace_table, toml_value

BEFORE = "# top comment\n[profiles.a]\nx = 1  # inline\n\n"
AFTER = "# about b\n[profiles.b]\ny = \"q\"\n[other]\nz = 1\n"


def test_a_table_is_replaced_and_the_rest_kept_byte_for_byte() -> None:
    text = BEFORE.replace("[profiles.a]\nx = 1  # inline\n\n", "[profiles.a]\nx = 1\nold = true\n\n") + AFTER
    new = replace_table(text, ("profiles", "a"), {"certificate": "c.pem", "cache": True})
    assert new == "# top comment\n[profiles.a]\ncertificate = \"c.pem\"\ncache = true\n\n" + AFTER


def test_a_new_table_goes_at_the_end_after_a_blank_line() -> None:
    text = BEFORE + AFTER.rstrip("\n")  # no final newline
    new = replace_table(text, ("profiles", "new"), {"k": "v"})
    assert new == text + "\n\n[profiles.new]\nk = \"v\"\n"
    assert replace_table("", ("profiles", "n"), {"k": 1}) == "[profiles.n]\nk = 1\n"


def test_header_spellings_are_matched_by_meaning() -> None:
    text = '[ profiles . "dev" ]  # mine\nk = 1\n[x]\n'
    assert replace_table(text, ("profiles", "dev"), {"k": 2}) == "[profiles.dev]\nk = 2\n[x]\n"


@pytest.mark.parametrize("text", [
    "[profiles]\ndev.k = 1\n",                  # the table is defined by dotted keys elsewhere
    "[profiles.dev]\nk = 1\n[profiles.dev.sub]\nj = 2\n",  # a sub-table would be left behind
    "[profiles.dev\n",                          # not TOML at all
    's = """\n[profiles.dev]\n"""\n[profiles.dev]\nk = 1\n',  # a header-looking line in a string
])
def test_what_cannot_be_edited_safely_is_refused(text: str) -> None:
    with pytest.raises(TomlEditError):
        replace_table(text, ("profiles", "dev"), {"k": 2})


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_any_string_value_round_trips(value: str) -> None:
    rendered = render_table(("profiles", "p"), {"certificate": value})
    assert tomllib.loads(rendered) == {"profiles": {"p": {"certificate": value}}}
    assert "\n" not in toml_value(value)


@pytest.mark.slow  # hypothesis: several seconds
@given(st.dictionaries(st.from_regex(r"[a-z][a-z-]{0,10}", fullmatch=True),
                       st.one_of(st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=10)),
                       max_size=5),
       st.sampled_from(["a", "b", "c"]))
def test_replacing_keeps_every_other_table(values: dict[str, object], name: str) -> None:
    text = BEFORE + AFTER
    new = replace_table(text, ("profiles", name), values)
    expected = tomllib.loads(text)
    expected["profiles"][name] = values
    assert tomllib.loads(new) == expected
    assert new.endswith("[other]\nz = 1\n") or new.endswith(render_table(("profiles", name), values))
