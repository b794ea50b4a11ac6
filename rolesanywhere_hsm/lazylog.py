"""`get_logger`: a logger that imports `logging` only when a record can go somewhere.

`import logging` (with `traceback`, `string`, `weakref`) is among the largest imports of a
cold `credential-process`, and such a run logs nothing: without `--debug` no handler is
configured and every line of ours is a debug line. Until something has imported `logging`,
nothing can have configured it (a handler or a level needs the module), so the effective level
is the root's WARNING and a debug or info record would be dropped: this logger drops it
without importing anything. A warning or an error (or any other use of the logger) imports
`logging` and goes to the real logger of that name, as before; so does every call once
`logging` is loaded (`--debug`, a library user's program, pytest's caplog).
"""

from __future__ import annotations

import sys

__all__ = ["LazyLogger", "get_logger"]


class LazyLogger:
    """Stands for `logging.getLogger(name)`; see the module docstring for when it imports."""

    __slots__ = ("name", "_logger")

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: object = None

    def _real(self):  # type: ignore[no-untyped-def]  # a logging.Logger, untyped to keep typing out
        if self._logger is None:
            import logging

            self._logger = logging.getLogger(self.name)
        return self._logger

    def debug(self, msg: object, *args: object, **kwargs: object) -> None:
        if "logging" in sys.modules:
            kwargs["stacklevel"] = int(kwargs.get("stacklevel", 1)) + 1  # type: ignore[call-overload]
            self._real().debug(msg, *args, **kwargs)

    def info(self, msg: object, *args: object, **kwargs: object) -> None:
        if "logging" in sys.modules:
            kwargs["stacklevel"] = int(kwargs.get("stacklevel", 1)) + 1  # type: ignore[call-overload]
            self._real().info(msg, *args, **kwargs)

    def warning(self, msg: object, *args: object, **kwargs: object) -> None:
        kwargs["stacklevel"] = int(kwargs.get("stacklevel", 1)) + 1  # type: ignore[call-overload]
        self._real().warning(msg, *args, **kwargs)

    def __getattr__(self, name: str) -> object:  # error, exception, isEnabledFor, setLevel...
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._real(), name)


def get_logger(name: str) -> LazyLogger:
    """The logger `name`, importing `logging` only when a record could be shown (see above)."""
    return LazyLogger(name)
