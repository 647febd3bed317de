"""Typed configuration: dataclasses built strictly from dicts, YAML files and ``key=value`` overrides.

Benchmarks describe themselves as nested dataclasses.  A user changes them with a YAML file
(``--config``) and dotted overrides (``--set student.epochs=20``); an unknown key or a value
of the wrong type is an error that names the full key, before any work starts.  Configs
travel to pipeline components as plain JSON dicts and come back with :func:`from_dict`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ptdistill.io import check_file, read_text

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration key that does not exist or a value of the wrong type."""


class _Int(int):
    """An integer as YAML read it; ``text`` is what a ``str``-typed key keeps (``label_column=1`` -> "1")."""

    text: str


class _Float(float):
    """A float as YAML read it; ``text`` is what a ``str``-typed key keeps (``prompt=2e-5`` -> "2e-5")."""

    text: str


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats, for config files and ``--set`` values alike.

    YAML 1.1 (PyYAML's default) only reads a float with a dot and a signed exponent: ``2e-5``,
    ``1E3`` and ``1.5e5`` stay strings, so the README's own ``lr_grid=[2e-5,3e-5,5e-5]`` failed.
    Numbers keep the text they were written as, so a ``str``-typed key given ``2e-5`` (a prompt, a
    column name) gets that text back; :func:`_convert` turns them into plain int/float/str.
    A key given twice in one mapping is an error (PyYAML keeps the last one silently).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """The mapping of ``node``; raises yaml.YAMLError naming a repeated key and both its lines (1-based)."""
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in lines:
                raise yaml.YAMLError(f"duplicate key {key!r} at lines {lines[key]} and {line};"
                                     " a key may appear once in a mapping")
            lines[key] = line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> _Int:
        number = _Int(super().construct_yaml_int(node))
        number.text = node.value
        return number

    def construct_yaml_float(self, node: yaml.ScalarNode) -> _Float:
        number = _Float(super().construct_yaml_float(node))
        number.text = node.value
        return number


_FLOAT_TAG = "tag:yaml.org,2002:float"
#: YAML 1.1's floats (a dot or .inf/.nan, sexagesimal) plus exponents without a dot or sign (YAML 1.2).
_FLOAT = re.compile(r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
_Loader.yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in resolvers if tag != _FLOAT_TAG]
                                   for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_FLOAT_TAG, _FLOAT, list("-+0123456789."))
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor(_FLOAT_TAG, _Loader.construct_yaml_float)


def _yaml(text: str) -> Any:
    """``text`` parsed by :class:`_Loader`; raises yaml.YAMLError."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def _plain(value: Any) -> Any:
    """``value`` with YAML's text-keeping numbers turned into plain int and float, containers included."""
    if isinstance(value, _Int):
        return int(value)
    if isinstance(value, _Float):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert containers and dataclasses."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return _plain(value)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(value, tp, key)
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(value, tp, key)
    if origin in (list, tuple):
        return _convert_sequence(value, tp, key)
    if origin is dict:
        return _convert_mapping(value, tp, key)
    return _convert_scalar(value, tp, key)


def _convert_union(value: Any, tp: Any, key: str) -> Any:
    """``value`` as the first member of the union ``tp`` that takes it (``None`` for an Optional)."""
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _convert(value, arg, key)
        except ConfigError as err:
            errors.append(str(err))
    raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: expected {_type_name(tp)}, got {value!r}")


def _convert_dataclass(value: Any, tp: type, key: str) -> Any:
    """An instance of dataclass ``tp`` as it is, or one built from a mapping."""
    if isinstance(value, tp):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
    return _build(tp, value, key)


def _convert_sequence(value: Any, tp: Any, key: str) -> list | tuple:
    """A list (or tuple, for a ``tuple[...]`` annotation) of converted items."""
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}: expected a list, got {value!r}")
    args = typing.get_args(tp)
    item = args[0] if args else Any
    items = [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if typing.get_origin(tp) is tuple else items


def _convert_mapping(value: Any, tp: Any, key: str) -> dict:
    """A dict of converted values."""
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {value!r}")
    args = typing.get_args(tp)
    item = args[1] if args else Any
    return {k: _convert(v, item, f"{key}.{k}") for k, v in value.items()}


def _convert_scalar(value: Any, tp: Any, key: str) -> Any:
    """A finite float, an int (an integral float too: JSON round trips and KFP structs turn ints into
    floats), a str (a number as it was written) or a bool; anything else is a ConfigError."""
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):  # no float setting means anything when infinite or NaN
            raise ConfigError(f"{key}: expected a finite number, got {float(value)!r}")
        return float(value)
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if tp is str and isinstance(value, (_Int, _Float)):
        return value.text
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported annotation {_type_name(tp)}")


def _build(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - fields)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown key {where}{unknown[0]}; valid keys here: {', '.join(sorted(fields))}")
    kwargs = {k: _convert(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{prefix or cls.__name__}: {err}") from None
    except ValueError as err:  # a class's own range check names the field: prefix it with where it sits
        raise ConfigError(f"{prefix}.{err}" if prefix else str(err)) from None


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping for {cls.__name__}, got {data!r}")
    return _build(cls, data)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain JSON-ready dict of a dataclass config."""
    return dataclasses.asdict(config)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into the key path and the YAML-parsed value (YAML 1.2 floats: ``2e-5`` is a number)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: expected a dotted key such as student.epochs")
    try:
        value = _yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r} ({err})") from None
    return key.split("."), value


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(
    cls: type[T], yaml_path: str | Path | None = None, overrides: list[str] = (), base: T | None = None
) -> T:
    """``base`` (default: ``cls()``), then the YAML file, then each ``key=value`` override, checked strictly."""
    return from_dict(cls, layer(to_dict(base if base is not None else cls()), yaml_path, overrides))


def layer(data: dict[str, Any], yaml_path: str | Path | None = None, overrides: list[str] = ()) -> dict[str, Any]:
    """``data`` (a config as :func:`to_dict` gives it) with the YAML file merged in, then each
    ``key=value`` override set; nothing is checked against a class yet (:func:`from_dict` does).

    Raises ConfigError for an unreadable or non-mapping YAML file, a bad override, or an override
    whose parent key is not a mapping in ``data``; ``data`` itself is left as it was.
    """
    data = copy.deepcopy(data)
    if yaml_path is not None:
        path = Path(yaml_path)
        try:  # an empty file is an empty config; anything else must be a readable UTF-8 file
            text = "" if path.is_file() and path.stat().st_size == 0 else read_text(check_file(path))
        except ValueError as err:
            raise ConfigError(f"--config {err}") from None
        try:
            loaded = _yaml(text) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"--config {path}: not valid YAML ({err})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {path}: expected a mapping at the top level")
        data = _merge(data, loaded)
    for text in overrides:
        path_keys, value = parse_override(text)
        node = data
        for i, part in enumerate(path_keys[:-1]):
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown key {'.'.join(path_keys[: i + 1])} in --set {text!r}")
            node = node[part]
        node[path_keys[-1]] = value
    return data
