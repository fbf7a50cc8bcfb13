"""``"package.module:name"`` -> the object it names, for plug-ins named in configs (algorithms,
policy backends, graders), so a new one needs no library edit."""
from __future__ import annotations

import importlib
from typing import Any


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
