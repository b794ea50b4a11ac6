"""The docs show the shipped deploy/ files, not copies that drift: every block after an
`<!-- include: PATH -->` line is the file PATH, byte for byte, and every shipped file is shown
where the docs promise it. `python -m tests.deploy.test_deploy_docs` rewrites the blocks from
the files after a change."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
INCLUDE = re.compile(r"^<!-- include: (\S+) -->\n(```[a-z]*)\n(.*?)^```$", re.M | re.S)
SHIPPED = sorted(p for p in (ROOT / "deploy").rglob("*") if p.is_file() and p.name != "build")


def includes(text: str) -> list[tuple[str, str]]:
    """(path, the block's text) for each include in a document."""
    return [(m.group(1), m.group(3)) for m in INCLUDE.finditer(text)]


def render(text: str) -> str:
    """The document with each included block replaced by its file."""
    return INCLUDE.sub(lambda m: f"<!-- include: {m.group(1)} -->\n{m.group(2)}\n"
                       f"{(ROOT / m.group(1)).read_text()}```", text)


def test_every_included_block_is_its_file() -> None:
    found = 0
    for doc in DOCS:
        for path, block in includes(doc.read_text()):
            found += 1
            assert (ROOT / path).is_file(), f"{doc.name} includes a missing {path}"
            assert block == (ROOT / path).read_text(), (
                f"{doc.name}: the block of {path} differs from the file; run "
                "`python -m tests.deploy.test_deploy_docs` to rewrite it")
    assert found >= len(SHIPPED)


def test_every_shipped_file_is_shown_where_the_docs_promise() -> None:
    shown = {doc.name: {path for path, _ in includes(doc.read_text())} for doc in DOCS}
    for path in SHIPPED:
        assert str(path.relative_to(ROOT)) in shown["deploy.md"], path
    assert "deploy/systemd/rolesanywhere-hsm-serve.service" in shown["serve.md"]
    assert "deploy/systemd/rolesanywhere-hsm-update.service" in shown["update.md"]


def test_the_include_reader_sees_a_changed_block() -> None:
    text = "<!-- include: deploy/kubernetes/config.yaml -->\n```yaml\nkind: Other\n```\n"
    assert includes(text) == [("deploy/kubernetes/config.yaml", "kind: Other\n")]
    assert includes(render(text))[0][1] == (ROOT / "deploy/kubernetes/config.yaml").read_text()


if __name__ == "__main__":
    for doc in DOCS:
        text = doc.read_text()
        if render(text) != text:
            doc.write_text(render(text))
            print(f"rewrote {doc.relative_to(ROOT)}", file=sys.stderr)
