"""Name -> entry tables for plug-ins (policy backends, PRM types), filled by decorators in the
modules that define the entries and open to ``package.module:name`` import paths, so a new
plug-in needs no library edit."""
from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable, Generic, TypeVar

from .imports import import_path

T = TypeVar("T")
#: Field metadata for a plug-in's option that changes speed, memory or where requests go, not what is
#: computed: a resumed run may change it (``field(default=..., metadata=RUNTIME)``).
RUNTIME = {"runtime": True}


class Registry(Generic[T]):
    """``kind`` names the table in errors ("policy backend"); ``builtins`` are modules that register
    on import, loaded on first lookup; ``wrap`` turns an object named by import path into an entry (ValueError, phrased
    after the name, for one that cannot be: "is not a class")."""

    def __init__(self, kind: str, builtins: tuple[str, ...] = (), wrap: Callable[[Any], T] = lambda obj: obj):
        self.kind, self._builtins, self._wrap = kind, builtins, wrap
        self._entries: dict[str, T] = {}
        self._loaded = False

    def add(self, name: str, entry: T, *, overwrite: bool = False) -> None:
        """Register ``entry``; the same entry again (a module imported twice) is no conflict."""
        old = self._entries.get(name)
        if old is not None and old != entry and not overwrite:
            raise ValueError(f"a {self.kind} named {name!r} is already registered; pass overwrite=True to replace it")
        self._entries[name] = entry

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        """The entry registered as ``name``, or the object an import path names (wrapped)."""
        self._load_builtins()
        if name in self._entries:
            return self._entries[name]
        if ":" in name:
            obj = import_path(name)
            try:
                return self._wrap(obj)
            except ValueError as e:  # the wrapper says what the object lacks ("is not a class")
                raise ValueError(f"{name!r} {e}") from None
        close = difflib.get_close_matches(name, self._entries, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown {self.kind} {name!r}{hint}; registered: {sorted(self._entries)} "
                         f"(or give an import path 'package.module:name')")

    def _load_builtins(self) -> None:
        if not self._loaded:
            for module in self._builtins:
                importlib.import_module(module)
            self._loaded = True
