"""Messages the docs quote are messages the tool prints.

In the troubleshooting sections ("When it goes wrong", ...) every double-quoted text of three
words or more is an error text a user will search for: it must be in the code, word for word.
And the one about pcscd is checked for real, with ykcs11 and no pcscd to reach."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
TROUBLESHOOTING = re.compile(r"^## (When it goes wrong|Troubleshooting|Wrong PIN.*)$", re.MULTILINE)


def _sections() -> list[tuple[str, str]]:
    found = []
    for doc in sorted((ROOT / "docs").glob("*.md")):
        text = doc.read_text()
        for match in TROUBLESHOOTING.finditer(text):
            end = text.find("\n## ", match.end())
            found.append((doc.name, text[match.end(): end if end >= 0 else None]))
    return found


def _quoted(section: str) -> list[str]:
    flat = re.sub(r"\s*\n\s*", " ", section)
    return [q for q in re.findall(r'"([^"`]+)"', flat) if len(q.split()) >= 3]


def _message_patterns() -> list[re.Pattern[str]]:
    """Every string literal in the package as a regex: f-string fields match any text, and
    implicitly joined literals are one string (ast joins them); each literal piece between
    fields also stands alone (a doc may quote part of a message)."""
    import ast

    patterns = []
    for path in (ROOT / "rolesanywhere_hsm").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr):
                parts = [re.escape(v.value) if isinstance(v, ast.Constant) else ".+?" for v in node.values]
                fixed = sum(len(v.value) for v in node.values if isinstance(v, ast.Constant))
                if fixed >= 10:  # f"{a} {b}" would match any text: not a message to quote
                    patterns.append(re.compile("".join(parts), re.DOTALL))
                patterns += [re.compile(re.escape(v.value)) for v in node.values
                             if isinstance(v, ast.Constant) and len(v.value) > 10]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) > 10:
                patterns.append(re.compile(re.escape(node.value)))
    return patterns


def _in_code(quoted: str, patterns: list[re.Pattern[str]]) -> bool:
    """A whole message (fields matching anything) or a piece of one, word for word."""
    return any(p.fullmatch(quoted) or p.fullmatch(quoted.rstrip(".")) or quoted in p.pattern.replace("\\", "")
               for p in patterns)


@pytest.mark.slow  # reads every doc and module: several seconds
def test_quoted_messages_are_in_the_code() -> None:
    patterns = _message_patterns()
    quoted = [(name, q) for name, section in _sections() for q in _quoted(section)]
    assert quoted, "no troubleshooting section found"
    missing = [f"{name}: {q!r}" for name, q in quoted if not _in_code(q, patterns)]
    assert not missing, missing


@pytest.mark.slow  # reads every doc and module: several seconds
def test_an_invented_message_would_be_caught() -> None:
    patterns = _message_patterns()
    assert not _in_code("no smart card service running", patterns)
    assert _in_code("The token or its reader failed while listing the slots (DeviceError).", patterns)


@pytest.mark.yubikey
def test_no_pcscd_message_as_yubikey_md_quotes_it(tmp_path: Path) -> None:
    module = "/usr/lib/x86_64-linux-gnu/libykcs11.so"
    if not os.path.exists(module):
        pytest.skip("ykcs11 is not installed")
    env = {**os.environ, "PCSCLITE_CSOCK_NAME": str(tmp_path / "no-pcscd.sock")}
    result = subprocess.run(
        [sys.executable, "-m", "rolesanywhere_hsm", "read-certificate-data",
         "--certificate", f"pkcs11:token=x?module-path={module}"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 4 and result.stdout == ""
    assert result.stderr == ("rolesanywhere-hsm: The token or its reader failed while listing the slots "
                             "(DeviceError).\nFor smart cards and YubiKeys, check that the smart card "
                             "service (pcscd) runs.\n")
