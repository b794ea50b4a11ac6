"""`Record`: the base of the frozen value classes that a `credential-process --cache` hit builds.

They were dataclasses; `import dataclasses` loads `inspect` (and with it `ast`, `dis`,
`tokenize`), which cost a cache hit more than the rest of its work together (docs/performance.md).
A subclass writes its own `__init__` (an explicit signature, plain to read and to type-check)
and sets its fields with `_set`; the base gives what the dataclasses gave: equality and a hash
over `_compared`, a `repr` over `_shown` (secrets are left out of it), and no assignment after
construction.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a cache hit
if TYPE_CHECKING:
    from typing import Self

__all__ = ["Record"]


class Record:
    """A frozen value: fields set once in `__init__` through `_set`, never assigned after."""

    __slots__ = ()
    _compared: tuple[str, ...] = ()  # equality and hash; also what repr shows unless _shown says
    _shown: tuple[str, ...] | None = None

    def _set(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: {type(self).__name__} is frozen")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: {type(self).__name__} is frozen")

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._compared)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.__class__.__name__, *self._values()))

    def __getstate__(self) -> dict[str, object]:  # copy and pickle, which cannot use __setattr__
        return {name: getattr(self, name) for cls in type(self).__mro__
                for name in getattr(cls, "__slots__", ()) if hasattr(self, name)}

    def __setstate__(self, state: dict[str, object]) -> None:
        self._set(**state)

    def _replace(self, **changes: object) -> Self:
        """A copy with `changes`, made through `__init__` so that its checks run again (as
        `dataclasses.replace` did); for a subclass whose `__init__` takes its `_compared` fields."""
        values = {name: getattr(self, name) for name in self._compared}
        values.update(changes)
        return type(self)(**values)

    __replace__ = _replace  # copy.replace(record, **changes) (Python 3.13)

    def __repr__(self) -> str:
        shown = self._compared if self._shown is None else self._shown
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{type(self).__name__}({inner})"
