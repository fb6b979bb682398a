"""Plain data <-> config dataclasses: YAML files, ``--set KEY=VALUE`` items and value coercion.

Generic over any frozen dataclass of sections (``CADASGConfig``, ``FederatedConfig``): unknown
keys are refused with the list of known ones, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

from cadasg_dist.errors import ConfigError


def parse_overrides(items: list[str] | tuple[str, ...], flag: str = "--set") -> dict[str, Any]:
    """``["train.epochs=5", "model.hidden=[64, 64]"]`` -> ``{"train.epochs": 5, "model.hidden": [64, 64]}``:
    each value read as YAML (a string when it is not YAML). Raises ``ConfigError`` on an item without '='."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        key, value = (part.strip() for part in item.split("=", 1))
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key] = value
    return out


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """The YAML document in ``path`` (``{}`` when empty); ``what`` names the file in the errors."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} not found: {p}")
    try:
        return yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {p} is not valid YAML: {exc}") from None


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """``read_yaml``, refusing a document that is not a mapping at the top level."""
    raw = read_yaml(path, what)
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {Path(path)} must hold a mapping at the top level")
    return raw


def require(checks: list[tuple[bool, str]]) -> None:
    """Raise ``ConfigError`` with the message of the first failed ``(ok, message)`` check."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


# --- generic dataclass <-> plain data ---------------------------------------------------------

def dataclass_of(tp: Any) -> type | None:
    """The dataclass a field holds (through Optional), or None for a mapping or a scalar."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next((a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)), None)
    return None


def to_plain(value: Any) -> Any:
    """A dataclass tree as YAML/JSON-ready data: tuples as lists, infinities as "inf" / "-inf"."""
    if dataclasses.is_dataclass(value):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [to_plain(v) for v in value]
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def build_dataclass(cls: type, raw: Any, where: str) -> Any:
    """``cls`` from plain data (``None``: its defaults), each value coerced to its field's type;
    ``where`` is the dotted prefix that errors name (``""`` at the top level, else ending in ".")."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"config section {where.rstrip('.') or 'top level'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown config key {(where + unknown[0])!r}; known keys: {', '.join(sorted(names))}")
    kwargs = {name: _coerce(hints[name], value, f"{where}{name}") for name, value in raw.items()}
    return cls(**kwargs)


_SWITCH = {"true": "on", "false": "off", "yes": "on", "no": "off"}


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where)
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, where + ".")
    if origin is Literal:
        if "on" in args and "off" in args and isinstance(value, bool | str):  # a switch with "auto"
            value = _SWITCH.get(str(value).lower(), value)  # true / false mean on / off
        if value not in args:
            raise ConfigError(f"{where} must be one of {list(args)}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{where}[{k!r}]") for k, v in value.items()}
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        if dataclasses.is_dataclass(args[0]):  # a list of entries: errors name the entry
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        return tuple(_coerce(args[0], v, where) for v in value)
    return _coerce_scalar(tp, value, where)


def _coerce_scalar(tp: Any, value: Any, where: str) -> Any:
    """bool (from the usual words too), float, int (refusing a fraction), str; other types as given."""
    try:
        if tp is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes", "on"):
                    return True
                if value.lower() in ("false", "0", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if tp is float:
            return float(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a {tp.__name__}, got {value!r}") from None
    return value
