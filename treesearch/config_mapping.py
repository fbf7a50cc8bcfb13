"""Plain YAML data onto typed dataclasses and back, strictly.

Why strict: a typo such as ``temprature: 0.1`` silently keeping the default would change every
number of a week-long sweep, so unknown keys and wrong types fail with the source and the dotted
key (``policies[0].temprature: unknown key (did you mean 'temperature'?)``). Generic over any
dataclass tree: the study schema (``experiments.config``) and every plug-in's options dataclass
(a policy backend's options, an algorithm's fields) are read by this one mapping.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Mapping, Union


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key."""


def error(source: str, key: str, msg: str) -> ConfigError:
    """``source: key: msg`` (no source: ``key: msg``)."""
    return ConfigError(f"{source}: {key or '<top level>'}: {msg}" if source else f"{key or '<top level>'}: {msg}")


def from_plain(tp: Any, value: Any, key: str = "", source: str = "<config>") -> Any:
    """Map YAML data onto ``tp``, naming the dotted key of the first mismatch."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise error(source, key, f"must not be null (expected {_type_name(tp)})")
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return from_plain(arg, value, key, source)
            except ConfigError as e:
                errors.append(e)
        raise errors[-1] if len(errors) == 1 else error(source, key, f"expected {_type_name(tp)}, got {describe(value)}")
    if dataclasses.is_dataclass(tp):
        if hasattr(tp, "from_plain"):  # a dataclass with a YAML form of its own (e.g. a PRM's flat options)
            return tp.from_plain(value, key, source)
        return _dataclass(tp, value, key, source)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise error(source, key, f"expected a list, got {describe(value)}")
        (item,) = typing.get_args(tp) or (Any,)
        return [from_plain(item, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise error(source, key, f"expected a mapping, got {describe(value)}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise error(source, key, f"expected true or false, got {describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise error(source, key, f"expected an integer, got {describe(value)}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 6.74e9 (no dot before e, no sign) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise error(source, key, f"expected a number, got {describe(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise error(source, key, f"expected a string, got {describe(value)}")
        return value
    raise error(source, key, f"unsupported field type {_type_name(tp)}")


def _dataclass(tp: Any, value: Any, key: str, source: str) -> Any:
    if not isinstance(value, Mapping):
        raise error(source, key, f"expected a mapping for {tp.__name__}, got {describe(value)}")
    hints = typing.get_type_hints(tp)
    names = [f.name for f in dataclasses.fields(tp) if f.init]
    kwargs = {}
    for k, v in value.items():
        sub = f"{key}.{k}" if key else str(k)
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(names)}"
            raise error(source, sub, f"unknown key{hint}")
        kwargs[k] = from_plain(hints[k], v, sub, source)
    missing = [f.name for f in dataclasses.fields(tp) if f.init and f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise error(source, f"{key}.{missing[0]}" if key else missing[0], "required key is missing")
    try:
        return tp(**kwargs)
    except (TypeError, ValueError) as e:
        raise error(source, key, str(e)) from None


def to_plain(x: Any) -> Any:
    """YAML-safe data; Python objects (callables) become their import path; a dataclass with a
    ``to_plain()`` method writes its own form."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        if hasattr(x, "to_plain"):
            return to_plain(x.to_plain())
        x = {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}
    if isinstance(x, dict):
        return {k if isinstance(k, (str, int)) else str(k): to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_plain(v) for v in x]
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if callable(x):
        return f"{getattr(x, '__module__', '?')}:{getattr(x, '__qualname__', type(x).__name__)}"
    return repr(x)


def describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) < 40 else text[:37] + '...'}"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
