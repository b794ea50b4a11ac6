"""The package's imports form no circle: neither at module level nor inside functions (a lazy
import still ties the two modules together), and TYPE_CHECKING-only imports aside. No import
runs back up a layer (LAYERS: a module imports its own layer and those below). The graph is
read from the source with `ast`, so the test needs no import and sees every branch."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "rolesanywhere_hsm"

__all__ = ["LAYERS", "find_cycle", "import_graph", "layer_of", "layout_map"]

# Lowest first, by the first name under the package (a package counts as a whole). docs/design.md
# draws its layout map from these and the graph.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundations", ("errors", "redact", "files", "deadline", "arn", "sigv4x509", "x509", "inifile",
                     "tomltable", "credentials", "credentials_file", "endpoints", "issuer_path",
                     "certselector", "httpserver", "digest", "record", "attempts", "backoff",
                     "rotation", "cachekey", "sdnotify", "keysource", "netwatch", "proxyenv",
                     "sigv4request", "lazylog")),
    ("keys", ("signers",)),
    ("the call", ("client", "spec", "directhttp", "httpxpath")),
    ("services", ("session", "refresh", "cache", "settings", "botocore_provider", "provision",
                  "doctor", "emulator", "servers", "attestation", "audit", "metrics", "_dev")),
    ("front ends", ("cli", "__main__")),
)


def _modules(root: Path = ROOT) -> dict[str, Path]:
    modules = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skipped.update(id(n) for n in ast.walk(inner))
    return skipped


def _targets(module: str, node: ast.Import | ast.ImportFrom, is_package: bool,
             modules: dict[str, Path]) -> list[str]:
    """The package's modules an import statement loads (the deepest one each name names)."""
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, *([base] if base else [])])
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                 for alias in node.names]
    found = []
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name.split(".")[0] == PACKAGE:
            found.append(name)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the package's modules it imports, at module level or in a function."""
    return {name: set(targets) for name, targets in _graph(root).items()}


@functools.cache
def _graph(root: Path) -> dict[str, frozenset[str]]:  # parsed once per run: 3 tests read it
    modules = _modules(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in skipped:
                graph[name].update(t for t in _targets(name, node, path.name == "__init__.py", modules)
                                   if t != name)
    return {name: frozenset(targets) for name, targets in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) == 1:
        return len(LAYERS) - 1  # the package itself re-exports the public API
    for index, (_, names) in enumerate(LAYERS):
        if parts[1] in names:
            return index
    return None


def _component(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "(package)"
    is_package = (ROOT / PACKAGE / parts[1]).is_dir()
    return f"{parts[1]}/" if is_package else parts[1]


def layout_map(root: Path = ROOT) -> str:
    """The layout map of docs/design.md: each layer's modules (a package as `name/`) and what
    each imports from the package, module- and function-level, drawn from `import_graph`."""
    graph = import_graph(root)
    uses: dict[str, set[str]] = {}
    for module, targets in graph.items():
        uses.setdefault(_component(module), set()).update(
            _component(t) for t in targets if _component(t) != _component(module))
    lines = []
    for index in reversed(range(len(LAYERS))):
        title, names = LAYERS[index]
        members = sorted(c for c in uses if layer_of(f"{PACKAGE}.{c.rstrip('/')}") == index
                         and c != "(package)")
        for position, component in enumerate(members):
            head = f"{title}:" if position == 0 else ""
            imported = ", ".join(sorted(uses[component])) or "-"
            lines.append(f"{head:<13}{component:<20}-> {imported}")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def test_the_design_notes_draw_todays_imports() -> None:
    design = (ROOT / "docs" / "design.md").read_text()
    start = design.index("<!-- layout-map -->\n```text\n") + len("<!-- layout-map -->\n```text\n")
    drawn = design[start:design.index("```", start)]
    assert drawn == layout_map(), "redraw it: python -c 'from tests.test_import_graph import layout_map; print(layout_map(), end=\"\")'"


def test_no_import_runs_back_up_a_layer() -> None:
    graph = import_graph()
    unplaced = sorted({m for m in graph if layer_of(m) is None})
    assert unplaced == [], "give these modules a layer in LAYERS"
    upward = [f"{m} -> {t}" for m, targets in sorted(graph.items()) for t in sorted(targets)
              if (layer_of(t) or 0) > (layer_of(m) or 0)]
    assert upward == []


def test_no_import_circle_in_the_package() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_graph_sees_module_and_function_level_imports() -> None:
    graph = import_graph()
    assert "rolesanywhere_hsm.errors" in graph["rolesanywhere_hsm.client"]  # module level
    assert "rolesanywhere_hsm.signers.secretpolicy" in graph["rolesanywhere_hsm.signers.file"]  # in a function


@pytest.mark.parametrize(("files", "expected"), [
    ({"a.py": "from rolesanywhere_hsm import b\n", "b.py": "def f():\n    import rolesanywhere_hsm.a\n"},
     ["rolesanywhere_hsm.a", "rolesanywhere_hsm.b", "rolesanywhere_hsm.a"]),
    ({"a.py": "from . import b\n", "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
      "    from rolesanywhere_hsm import a\n"}, None),
    ({"p/__init__.py": "", "p/x.py": "from ..q import y\n", "q/__init__.py": "",
      "q/y.py": "from rolesanywhere_hsm.p.x import z\n"},
     ["rolesanywhere_hsm.p.x", "rolesanywhere_hsm.q.y", "rolesanywhere_hsm.p.x"]),
])
def test_the_check_can_fail(tmp_path: Path, files: dict[str, str], expected: list[str] | None) -> None:
    (tmp_path / PACKAGE).mkdir()
    (tmp_path / PACKAGE / "__init__.py").write_text("")
    for name, text in files.items():
        target = tmp_path / PACKAGE / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    assert find_cycle(import_graph(tmp_path)) == expected
