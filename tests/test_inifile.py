"""The line-based INI section editor: what botocore's reader sees changes as asked, and every
other byte stays."""

from __future__ import annotations

import configparser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rolesanywhere_hsm.errors import UsageError
from rolesanywhere_hsm.inifile import set_section_values

NEW = {"aws_access_key_id": "ASIANEW", "aws_secret_access_key": "secret/new+", "aws_session_token": "tok=="}


def parse(text: str) -> dict[str, dict[str, str]]:
    """What botocore reads (it uses RawConfigParser with default settings)."""
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    return {name: dict(parser.items(name)) for name in parser.sections()}


def test_new_file() -> None:
    out = set_section_values("", "default", NEW)
    assert out == ("[default]\naws_access_key_id = ASIANEW\naws_secret_access_key = secret/new+\n"
                   "aws_session_token = tok==\n")


def test_existing_keys_are_replaced_in_place_keeping_everything_else() -> None:
    before = (
        "# my credentials\n"
        "[dev]\n"
        "aws_access_key_id = AKIADEV\n"
        "\n"
        "; the one update writes\n"
        "[ci]   \n"
        "region=eu-west-1\n"
        "AWS_Access_Key_Id=OLD\n"
        "aws_secret_access_key :  old\n"
        "aws_session_token = old-token\n"
        "   continued-token-line\n"
        "output = json\n"
        "\n"
        "# trailing comment\n"
        "[prod]\n"
        "aws_access_key_id = AKIAPROD\n"
    )
    after = set_section_values(before, "ci", NEW)
    assert after == (
        "# my credentials\n"
        "[dev]\n"
        "aws_access_key_id = AKIADEV\n"
        "\n"
        "; the one update writes\n"
        "[ci]   \n"
        "region=eu-west-1\n"
        "AWS_Access_Key_Id=ASIANEW\n"
        "aws_secret_access_key :  secret/new+\n"
        "aws_session_token = tok==\n"
        "output = json\n"
        "\n"
        "# trailing comment\n"
        "[prod]\n"
        "aws_access_key_id = AKIAPROD\n"
    )
    assert parse(after)["ci"] == {"region": "eu-west-1", "output": "json", **NEW}


def test_missing_keys_go_after_the_last_key_of_the_section() -> None:
    before = "[ci]\nregion = x\n\n# about prod\n[prod]\nk = v\n"
    after = set_section_values(before, "ci", NEW)
    assert after == ("[ci]\nregion = x\naws_access_key_id = ASIANEW\naws_secret_access_key = secret/new+\n"
                     "aws_session_token = tok==\n\n# about prod\n[prod]\nk = v\n")


def test_a_new_section_is_appended_after_a_blank_line() -> None:
    assert set_section_values("[a]\nk = v", "b", {"x": "1"}) == "[a]\nk = v\n\n[b]\nx = 1\n"
    assert set_section_values("[a]\nk = v\n\n", "b", {"x": "1"}) == "[a]\nk = v\n\n[b]\nx = 1\n"


def test_crlf_files_stay_crlf() -> None:
    before = "[a]\r\nk = v\r\n[default]\r\nregion = x\r\n"
    after = set_section_values(before, "default", {"x": "1"})
    assert after == "[a]\r\nk = v\r\n[default]\r\nregion = x\r\nx = 1\r\n"


def test_duplicate_keys_of_ours_are_merged() -> None:
    after = set_section_values("[d]\naws_session_token = a\naws_session_token = b\n", "d",
                               {"aws_session_token": "new"})
    assert after == "[d]\naws_session_token = new\n"


def test_section_names_match_exactly() -> None:
    before = "[ default ]\nk = v\n[profile default]\nk = v\n"
    after = set_section_values(before, "default", {"x": "1"})
    assert after.startswith(before) and parse(after)["default"] == {"x": "1"}


def test_a_duplicated_section_is_refused() -> None:
    with pytest.raises(UsageError, match=r"more than once \(lines 1, 3\)"):
        set_section_values("[d]\nk = v\n[d]\nk = w\n", "d", NEW)


@pytest.mark.parametrize("name", ["", " default", "a]b", "a[b", "line\nbreak", "DEFAULT"])
def test_unwritable_section_names_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="profile name"):
        set_section_values("", name, NEW)


# -- property: everything outside the section is kept byte for byte -------------------------------

_names = st.text(st.sampled_from("abcxyz-_.0123"), min_size=1, max_size=6)
_values = st.text(st.sampled_from("abcXYZ019 /+=:.-"), max_size=12).map(str.strip)
_line_end = st.sampled_from(["\n", "\r\n"])


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A valid credentials file: sections with keys, comments, blank lines, continuations."""
    end = draw(_line_end)
    sections = draw(st.lists(_names, min_size=0, max_size=5, unique=True))
    parts: list[str] = []
    if draw(st.booleans()):
        parts.append(f"# header comment{end}")
    for name in sections:
        parts.append(f"[{name}]{draw(st.sampled_from(['', '  ', ' ; note']))}{end}")
        keys = draw(st.lists(st.sampled_from(["aws_access_key_id", "aws_secret_access_key",
                                              "aws_session_token", "region", "output", "Region2"]),
                             max_size=5, unique_by=str.lower))
        for key in keys:
            delimiter = draw(st.sampled_from([" = ", "=", ": ", " :"]))
            parts.append(f"{key}{delimiter}{draw(_values)}{end}")
            if draw(st.integers(0, 5)) == 0:
                parts.append(f"    continued{end}")
            if draw(st.integers(0, 4)) == 0:
                parts.append(draw(st.sampled_from([end, f"# c{end}", f"; c{end}"])))
    text = "".join(parts)
    if text and draw(st.booleans()):
        text = text[: -len(end)]  # no final newline
    return text, sections


@pytest.mark.slow  # hypothesis, 300 examples: several seconds
@settings(max_examples=300, deadline=None)
@given(doc=documents(), target=_names)
def test_only_the_target_section_changes(doc: tuple[str, list[str]], target: str) -> None:
    text, sections = doc
    before = parse(text)
    after_text = set_section_values(text, target, NEW)
    after = parse(after_text)
    assert after[target] == {**before.get(target, {}), **NEW}
    assert {k: v for k, v in after.items() if k != target} == {k: v for k, v in before.items() if k != target}
    assert list(after) == list(before) + ([target] if target not in before else [])
    # Byte for byte: the text before the target section's header, and after its end.
    if target in sections:
        header = after_text.index(f"[{target}]")
        assert after_text[:header] == text[:header]
        index = sections.index(target)
        if index + 1 < len(sections):
            next_header = f"[{sections[index + 1]}]"
            assert after_text[after_text.index(next_header):] == text[text.index(next_header):]
    else:
        assert after_text.startswith(text)
    assert set_section_values(after_text, target, NEW) == after_text  # idempotent
