"""The one name -> entry table behind policy backends and PRM types."""
from __future__ import annotations

import pytest

from treesearch.registry import Registry


def make(obj):
    return ("wrapped", obj)


def test_entries_conflicts_import_paths_and_unknown_names():
    reg: Registry = Registry("widget", wrap=make)
    reg.add("a", 1)
    reg.add("a", 1)  # the same entry again (a module imported twice) is no conflict
    with pytest.raises(ValueError, match="a widget named 'a' is already registered; pass overwrite=True"):
        reg.add("a", 2)
    reg.add("a", 2, overwrite=True)
    assert reg.get("a") == 2 and reg.names() == ["a"]
    assert reg.get("test_registry:make") == ("wrapped", make)
    with pytest.raises(ValueError, match=r"unknown widget 'b'; registered: \['a'\]"):
        reg.get("b")
    with pytest.raises(ValueError, match="cannot import 'no_such_module'"):
        reg.get("no_such_module:x")


def test_builtin_modules_load_on_first_lookup(monkeypatch):
    imported = []
    monkeypatch.setattr("importlib.import_module", lambda name: imported.append(name))
    reg: Registry = Registry("widget", builtins=("pkg.one", "pkg.two"))
    assert imported == []
    reg.names()
    reg.names()
    assert imported == ["pkg.one", "pkg.two"]
