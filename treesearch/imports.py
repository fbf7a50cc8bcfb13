"""``"package.module:name"`` -> the object it names, for plug-ins named in configs (algorithms,
policy backends, graders), so a new one needs no library edit; and ``load_plugins`` for modules
that register names by decorator (``@register_prm("mine")``), imported before a config is read."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Iterable


def import_path(spec: str) -> Any:
    """The attribute ``name`` (dots allowed: ``Class.method``) of ``package.module``.

    Raises ValueError saying what was wrong: the form, the import, or the missing attribute.
    """
    mod, sep, attr = spec.partition(":")
    if not sep or not mod or not attr:
        raise ValueError(f"{spec!r} is not an import path of the form 'package.module:name'")
    try:
        obj = importlib.import_module(mod)
    except ImportError as e:
        raise ValueError(f"cannot import {mod!r} (from {spec!r}): {e}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{mod!r} has no attribute {attr!r} (from {spec!r})") from None
    return obj


def load_plugins(plugins: Iterable[str], base: str | Path = ".") -> None:
    """Import each plug-in: a module name (``my_pkg.prms``) or a ``.py`` file (relative to ``base``,
    the config's directory), so the names its decorators register can be used. Raises ValueError."""
    for plugin in plugins:
        if plugin.endswith(".py"):
            path = (Path(base) / plugin).resolve()
            if not path.is_file():
                raise ValueError(f"plugin {plugin!r}: no such file {path}")
            name = f"treesearch_plugin_{path.stem}"
            if name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as e:
                del sys.modules[name]
                raise ValueError(f"plugin {plugin!r}: importing {path} failed: {type(e).__name__}: {e}") from None
        else:
            try:
                importlib.import_module(plugin)
            except ImportError as e:
                raise ValueError(f"plugin {plugin!r}: cannot import it ({e}); give a module on the Python path "
                                 "or a .py file") from None
