"""Code and docs point only at files inside the repository: users have no `../shared`."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
WHERE = ("rolesanywhere_hsm", "docs", "tests", "softhsm-fixtures", "bench", ".ci")
OUTSIDE = re.compile(r"shared/|TOKENS\.md|(?<!docs/)PROTOCOL\.md|ARCHITECTURE\.md|STYLE\.md|(?<!tests/)golden/")


def _files() -> list[Path]:
    found = [ROOT / "README.md"]
    for top in WHERE:
        found += [p for p in (ROOT / top).rglob("*") if p.is_file() and p.suffix in ("", ".py", ".md", ".toml", ".sh")
                  and "__pycache__" not in p.parts]
    return [p for p in found if p.resolve() != Path(__file__).resolve()]


def test_no_reference_outside_the_repository() -> None:
    hits = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in _files()
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if OUTSIDE.search(line)]
    assert not hits, hits


def test_every_cited_doc_exists() -> None:
    cited = {m for p in _files() for m in re.findall(r"docs/[a-z0-9_-]+\.md", p.read_text(errors="replace"))}
    assert cited, "no doc is cited at all"
    missing = sorted(c for c in cited if not (ROOT / c).is_file())
    assert not missing, missing


def test_every_test_named_in_security_md_exists() -> None:
    """docs/security.md names the test that proves each guarantee: `tests/x.py::test_name`, and
    `::test_name` for another test of the file named last. Each must exist, so a rename cannot
    leave a guarantee pointing at nothing."""
    text = (ROOT / "docs" / "security.md").read_text()
    named: list[tuple[str, str]] = []
    current = None
    for match in re.finditer(r"`(tests/[\w/]+\.py)?(?:::(\w+))?`|section \d+'s\s+`(test_\w+)`", text):
        path, name, elsewhere = match.groups()
        if elsewhere:
            named.append(("*", elsewhere))
            continue
        if path:
            current = path
            assert (ROOT / path).is_file(), path
        if name:
            assert current is not None, name
            named.append((current, name))
    assert len(named) > 50
    missing = []
    for path, name in named:
        files = list((ROOT / "tests").rglob("test_*.py")) if path == "*" else [ROOT / path]
        if not any(re.search(rf"^(async )?def {name}\(", f.read_text(), re.M) for f in files):
            missing.append(f"{path}::{name}")
    assert not missing, missing
