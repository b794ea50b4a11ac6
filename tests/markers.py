"""pytest plugin: the test tiers' markers, applied automatically so that nobody has to remember them.

- Token markers by fixture: a test that uses (directly or through another fixture) a fixture
  from tests/fixtures/softhsm.py gets `softhsm`; tpm.py `tpm`; tpmkey.py `tpmkey`; yubikey.py
  `yubikey`. A test that starts a token itself (tests.tokens.tpm / tests.tokens.yubikey) gets
  the marker through the helper it calls, like `process` below.
- `process` by helper: a test whose code, or a helper or function-scoped fixture it calls from
  the tests package, refers to `subprocess`, `pty`, `os.fork` or `tests.clirunner.run_process`
  spawns processes. The in-process runner `tests.clirunner.run_cli` does not count.
- `slow` by hand (`@pytest.mark.slow`) on tests that wait on a clock or take more than about 2 s.
- `container` by hand on tests that build or run podman images.

- `fast`, set here on every test that has none of `slow`, `process`, `container`, `softhsm`,
  `tpm`, `tpmkey`, `yubikey` (FAST_TIER below): the fast tier, `python -m pytest -m fast` (the
  README's command): pure logic, loopback HTTP and the in-process CLI, no token at all (a
  SoftHSM2 clone costs a module load and C_Finalize per test). Never written by hand.

To keep `process` honest, a test in the fast tier that starts a Python process anyway (through
code the scan cannot see) fails and says which marker to add; cheap native tools (softhsm2-util,
`sh` for a `cmd:` PIN source) are allowed there.
"""

from __future__ import annotations

import functools
import inspect
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

__all__ = ["FAST", "FAST_TIER", "MARKERS"]

# Registered in pyproject.toml too (--strict-markers); this is the one list the code reads.
MARKERS = ("softhsm", "tpm", "tpmkey", "yubikey", "process", "slow", "container", "fast")
SLOW_TIER_MARKERS = ("slow", "process", "container", "softhsm", "tpm", "tpmkey", "yubikey")
FAST_TIER = " and ".join(f"not {name}" for name in SLOW_TIER_MARKERS)  # what `-m fast` selects
FAST = "fast"

_FIXTURE_MODULE_MARKERS = {
    "tests.fixtures.softhsm": "softhsm",
    "tests.fixtures.tpm": "tpm",
    "tests.fixtures.tpmkey": "tpmkey",
    "tests.fixtures.yubikey": "yubikey",
}
# Helpers that start a token's daemons, for tests that build their own token.
_HELPER_MODULE_MARKERS = {
    "tests.tokens.tpm": "tpm",
    "tests.tokens.tpmkey": "tpmkey",
    "tests.tokens.yubikey": "yubikey",
}
_SPAWNING_MODULES = frozenset({"subprocess", "pty", "multiprocessing", "pexpect"})
# `executable`: sys.executable in a command line (a `cmd:` PIN source, a helper script).
_SPAWNING_NAMES = frozenset({"run_process", "fork", "forkpty", "Popen", "executable"})
# Our own packages that the scan follows into (helpers, function-scoped fixtures). The token
# plumbing is left out: its processes are the token markers' business.
_FOLLOWED = ("tests",)
_NOT_FOLLOWED = ("tests.tokens", "tests.vpiv", "tests.fixtures.softhsm", "tests.fixtures.tpm",
                 "tests.fixtures.yubikey", "tests.markers", "tests.clirunner")


def _followed(module: str | None) -> bool:
    if not module or not module.startswith(_FOLLOWED):
        return False
    return not any(module == name or module.startswith(name + ".") for name in _NOT_FOLLOWED)


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


@functools.cache
def _referenced(code: types.CodeType) -> frozenset[str]:
    """Global names, attribute names and closure variables the code (nested functions included)
    refers to. Closure variables stand in for the names a LOAD_DEREF reads: the set is the same
    or a little larger, and reading it costs nothing where disassembling every function took
    seconds of each collection."""
    names: set[str] = set()
    for inner in _code_objects(code):
        names.update(inner.co_names, inner.co_freevars, inner.co_cellvars)
    return frozenset(names)


def _function_of(obj: Any) -> types.FunctionType | None:
    obj = inspect.unwrap(obj) if callable(obj) else obj
    if isinstance(obj, types.MethodType):
        obj = obj.__func__
    return obj if isinstance(obj, types.FunctionType) else None


def scan(function: Any) -> set[str]:
    """Markers a function earns by what it calls: `process`, or a token's marker."""
    func = _function_of(function)
    if func is None:
        return set()
    key = (func.__code__, id(func.__globals__))
    if key not in _SCANNED:  # parametrized tests and shared fixtures scan once per collection
        _SCANNED[key] = frozenset(_scan(func))
    return set(_SCANNED[key])


_SCANNED: dict[tuple[types.CodeType, int], frozenset[str]] = {}


def _scan(function: types.FunctionType) -> set[str]:
    found: set[str] = set()
    seen: set[int] = set()
    stack: list[Any] = [function]
    while stack:
        func = _function_of(stack.pop())
        if func is None or id(func.__code__) in seen:
            continue
        seen.add(id(func.__code__))
        names = _referenced(func.__code__)
        if names & _SPAWNING_NAMES:
            found.add("process")
        for name in names:
            value = func.__globals__.get(name)
            if isinstance(value, types.ModuleType):
                if value.__name__ in _SPAWNING_MODULES or value is subprocess:
                    found.add("process")
                continue
            module = getattr(value, "__module__", None)
            if module in _HELPER_MODULE_MARKERS:
                found.add(_HELPER_MODULE_MARKERS[module])
            if _followed(module):
                if isinstance(value, type):
                    stack.extend(vars(value).values())
                else:
                    stack.append(value)
    return found


def item_markers(item: pytest.Item) -> set[str]:
    found: set[str] = set()
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs if info is not None else {}
    for name in getattr(item, "fixturenames", ()):
        for fixturedef in definitions.get(name, ()):
            module = getattr(fixturedef.func, "__module__", "")
            if module in _FIXTURE_MODULE_MARKERS:
                found.add(_FIXTURE_MODULE_MARKERS[module])
            elif fixturedef.scope == "function" and _followed(module):
                found |= scan(fixturedef.func)
    function = getattr(item, "function", None)
    if function is not None:
        found |= scan(function)
    return found


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        have = {mark.name for mark in item.iter_markers()}
        if FAST in have:
            raise pytest.UsageError(f"{item.nodeid}: `fast` is set by tests/markers.py, not by hand "
                                    "(a test is fast when it has no slow-tier marker)")
        for name in sorted(item_markers(item) - have):
            item.add_marker(name)
        if _in_fast_tier(item):
            item.add_marker(FAST)


def _in_fast_tier(item: pytest.Item) -> bool:
    return not any(item.get_closest_marker(name) for name in SLOW_TIER_MARKERS)


def _is_python(args: Any) -> bool:
    """Whether a Popen's program is a Python interpreter or our console script: the children
    that cost start-up time (hundreds of ms of imports). Token tools (softhsm2-util) and `sh`
    for a `cmd:` PIN source take milliseconds and may run in the fast tier."""
    program = args if isinstance(args, (str, bytes, os.PathLike)) else (args[0] if args else "")
    name = os.path.basename(os.fsdecode(program)).split()[0] if program else ""
    return name.startswith("python") or name == "rolesanywhere-hsm" or os.fsdecode(program) == sys.executable


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A fast-tier test that starts a Python process fails: the scan above missed it, so the
    tier would lie about its cost. Mark it `process` (or run the CLI with tests.clirunner.run_cli)."""
    if not _in_fast_tier(item):
        return (yield)
    started: list[str] = []
    original = subprocess.Popen._execute_child  # type: ignore[attr-defined]

    def execute_child(self: Any, args: Any, *rest: Any, **kwargs: Any) -> Any:
        if _is_python(args):
            started.append(str(args if isinstance(args, str) else args[0]))
        return original(self, args, *rest, **kwargs)

    subprocess.Popen._execute_child = execute_child  # type: ignore[attr-defined]
    try:
        result = yield
    finally:
        subprocess.Popen._execute_child = original  # type: ignore[attr-defined]
    if started:
        pytest.fail(f"this test started a Python process ({', '.join(sorted(set(started)))}) but "
                    "is in the fast tier: add @pytest.mark.process, or run the CLI in-process with "
                    "tests.clirunner.run_cli", pytrace=False)
    return result
