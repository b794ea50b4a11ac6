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
